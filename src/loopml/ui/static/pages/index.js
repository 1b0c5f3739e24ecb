// One import per page, in navigation order (each module calls registerPage).
import './overview.js';
import './datasets.js';
import './jobs.js';
import './models.js';
import './endpoints.js';
import './monitors.js';
import './workflows.js';
import './triggers.js';
import './functions.js';
