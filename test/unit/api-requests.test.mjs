// How the REST API reads requests, as Firecracker does: the body is JSON whatever its Content-Type
// says (Firecracker's own examples send bodies with a bare `curl -d`), and the path is matched
// without a trailing or doubled slash. Through fastify inject: no socket and no VM needed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ApiServer } from '../../dist/api/server.js';
import { silentLogger } from '../../dist/log.js';

const newApi = () => new ApiServer({ id: 't', version: '0', log: silentLogger });

async function send(api, method, url, payload, headers = {}) {
  const r = await api.app.inject({ method, url, payload, headers });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined };
}
const memOf = async (api) => (await send(api, 'GET', '/machine-config')).body.mem_size_mib;

describe('REST API: requests as Firecracker reads them', () => {
  it('takes a JSON body under any Content-Type, or none (curl -d sends form data)', async () => {
    const api = newApi();
    const types = [undefined, 'application/x-www-form-urlencoded', 'text/plain', 'application/json', 'application/json; charset=utf-8'];
    for (const [i, type] of types.entries()) {
      const body = JSON.stringify({ vcpu_count: 1, mem_size_mib: 100 + i });
      const r = await send(api, 'PUT', '/machine-config', body, type ? { 'content-type': type } : {});
      assert.equal(r.status, 204, `${type}: ${JSON.stringify(r.body)}`);
      assert.equal(await memOf(api), 100 + i, `${type}: the body was used`);
    }
  });

  it('refuses a body that is empty, not JSON, poisons a prototype or gives a field twice, saying which, and changes nothing', async () => {
    const api = newApi();
    assert.equal((await send(api, 'PUT', '/machine-config', JSON.stringify({ vcpu_count: 1, mem_size_mib: 64 }))).status, 204);
    const cases = [
      ['', /the request body is empty/],
      ['{"vcpu_count": 1, "mem_size_mib": 65', /the request body is not JSON/],
      ['{"vcpu_count": 1, "mem_size_mib": 65, "__proto__": {"x": 1}}', /__proto__/],
      ['{"vcpu_count": 1, "mem_size_mib": 65, "constructor": {"prototype": {"x": 1}}}', /constructor\.prototype/],
      ['[1]', /body must be object/],
      // JSON.parse would keep the last: Firecracker refuses the body ("duplicate field"), and so do we.
      ['{"vcpu_count": 1, "mem_size_mib": 65, "mem_size_mib": 66}', /^the request body gives mem_size_mib twice$/],
    ];
    for (const [body, message] of cases) {
      for (const type of [undefined, 'application/json']) {
        const r = await send(api, 'PUT', '/machine-config', body, type ? { 'content-type': type } : {});
        assert.equal(r.status, 400, `${JSON.stringify(body)} (${type})`);
        assert.match(r.body.fault_message, message);
      }
    }
    assert.equal(await memOf(api), 64);
  });

  it('refuses an empty PATCH /machine-config, as Firecracker does', async () => {
    const api = newApi();
    const r = await send(api, 'PATCH', '/machine-config', '{}');
    assert.equal(r.status, 400);
    assert.equal(r.body.fault_message, 'Empty PATCH request.');
    assert.equal((await send(api, 'PATCH', '/machine-config', '{"mem_size_mib": 96}')).status, 204);
    assert.equal(await memOf(api), 96);
  });

  it('matches paths with a trailing or doubled slash', async () => {
    const api = newApi();
    assert.equal((await send(api, 'PUT', '/machine-config/', '{"vcpu_count": 1, "mem_size_mib": 80}')).status, 204);
    assert.equal((await send(api, 'GET', '//machine-config')).body.mem_size_mib, 80);
    assert.match((await send(api, 'PUT', '/actions/', '{"action_type": "InstanceStart"}')).body.fault_message, /no boot source/);
    const unknown = await send(api, 'GET', '/machine-configs/');
    assert.equal(unknown.status, 400);
    assert.match(unknown.body.fault_message, /Invalid request method and\/or path/);
  });
});
