// HTTP requests to `nodevisor serve`'s unix socket, as a script driving the Firecracker API makes them.
import http from 'node:http';

/** One request; the reply as { status, body } with body parsed from JSON (undefined when empty). */
export function request(sock, method, url, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const req = http.request({ socketPath: sock, method, path: url, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(data);
  });
}
