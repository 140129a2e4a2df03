/**
 * webadmin: qmailadmin and vqadmin on the web. Served on `protocol: http`
 * listeners that name it in `serve:` (HTTPS, or plain HTTP on loopback only).
 * Server admins manage domains, DKIM keys and the queue; domain admins
 * (postmaster@ or vpopmail's QA_ADMIN flag) their domain's users and
 * aliases; users their password, forwarding, vacation and spam filing.
 * Everything is a JSON API under /api/v1 (API.md) that the HTML forms post
 * to as well. It writes the vpopmail store the mail plugin reads, so a
 * change counts at once.
 */
import { definePlugin } from '../../core/index.js';
import { registerAdminCommands } from './cli.js';
import { createContext } from './context.js';
import { webadminOptions } from './options.js';
import { webadminRoutes } from './routes.js';

export default definePlugin({
  name: 'webadmin',
  options: webadminOptions,
  // yubin admin add|remove|list|token|revoke
  commands: ({ program, configOption }) => registerAdminCommands(program, configOption),
  setup({ options, config, log, services, dataDir }) {
    const ctx = createContext({ options, config, log, services, dataDir });
    return {
      hooks: {},
      http: { routes: (app, listener) => webadminRoutes(app, listener, ctx) },
      close: () => ctx.close(),
    };
  },
});
