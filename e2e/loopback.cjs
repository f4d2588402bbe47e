// Preloaded into the spawned MCP server (NODE_OPTIONS=--require=.../loopback.cjs) to keep it on
// loopback: @modelcontextprotocol/server-everything calls app.listen(PORT) with no host option,
// which would bind every interface. A listen() given only a port is bound to 127.0.0.1.
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function patchedListen(...args) {
  const first = args[0];
  const isPort = typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first));
  if (isPort && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, '127.0.0.1');
  } else if (first && typeof first === 'object' && !Array.isArray(first) && first.path === undefined && first.host === undefined && first.port !== undefined) {
    args[0] = { ...first, host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
