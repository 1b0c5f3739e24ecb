// One import per page, in navigation order (each module calls registerPage).
import './overview.js';
import './datasets.js';
import './jobs.js';
import './models.js';
