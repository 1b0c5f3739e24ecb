// placeholder until the page lands
import { h, registerPage } from '../app.js';
registerPage('jobs', { title: 'Jobs', render(el) { el.append(h('h1', null, 'Jobs')); } });
