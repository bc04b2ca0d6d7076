// The REST API's request bodies are checked by validators compiled at build time
// (scripts/build-validators.mjs), so that `serve` neither loads ajv nor compiles schemas at start-up.
// What they accept and refuse is tested with the routes (api-devices, api-logger-metrics, kvm/api).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as schemas from '../../dist/api/schemas.js';
import precompiled from '../../dist/api/api-validators.js';

const server = fileURLToPath(new URL('../../dist/api/server.js', import.meta.url));

describe('REST API: precompiled body validators', () => {
  it('has one for every schema of schemas.ts, by name', () => {
    const names = Object.keys(schemas).filter((n) => n.endsWith('Schema'));
    assert.ok(names.length >= 10, `schemas: ${names}`);
    for (const n of names) assert.equal(typeof precompiled[n], 'function', `no validator for ${n}`);
    assert.equal(precompiled.machineConfigSchema({ vcpu_count: 1, mem_size_mib: 64 }), true);
    assert.equal(precompiled.machineConfigSchema({ vcpu_count: '1', mem_size_mib: 64 }), false, 'no type coercion');
    assert.match(precompiled.machineConfigSchema.errors[0].message, /must be integer/);
  });

  it('a server with every route ready, in a fresh process, has loaded no ajv module', () => {
    const script = `
      import { createRequire } from 'node:module';
      const { ApiServer } = await import(${JSON.stringify(server)});
      const { silentLogger } = await import(${JSON.stringify(server.replace(/api\/server\.js$/, 'log.js'))});
      const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
      await api.app.ready();
      const r = await api.app.inject({ method: 'PUT', url: '/machine-config', payload: { vcpu_count: 0, mem_size_mib: 64 } });
      const loaded = Object.keys(createRequire(import.meta.url)('node:module')._cache);
      console.log(JSON.stringify({ status: r.statusCode, body: r.json(), fastify: loaded.some((f) => /node_modules\\/fastify\\//.test(f)), ajv: loaded.filter((f) => /node_modules\\/ajv\\//.test(f)) }));
    `;
    const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }));
    assert.equal(out.fastify, true, 'the check looks at the right module cache');
    assert.equal(out.status, 400);
    assert.match(out.body.fault_message, /vcpu_count must be >= 1/);
    assert.deepEqual(out.ajv, []);
  });
});
