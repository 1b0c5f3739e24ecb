// Entry point: load every page module, then route.
import { start } from './app.js';
import './pages/index.js';

start();
