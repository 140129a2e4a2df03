/**
 * qmail: no hooks of its own. It brings `yubin import qmail`, which reads a
 * qmail + vpopmail + spamdyke box with the readers in this folder and writes
 * a yubin site that does what the box did.
 */
import { definePlugin } from '../../core/index.js';
import { registerImportCommands } from './import/command.js';

export default definePlugin({
  name: 'qmail',
  setup: () => ({ hooks: {} }),
  commands: ({ program }) => registerImportCommands(program),
});
