// placeholder until the page lands
import { h, registerPage } from '../app.js';
registerPage('models', { title: 'Models', render(el) { el.append(h('h1', null, 'Models')); } });
