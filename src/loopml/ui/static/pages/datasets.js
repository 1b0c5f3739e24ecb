// placeholder until the page lands
import { h, registerPage } from '../app.js';
registerPage('datasets', { title: 'Datasets', render(el) { el.append(h('h1', null, 'Datasets')); } });
