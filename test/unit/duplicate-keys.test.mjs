// duplicateKey: the key JSON.parse would silently let a later one replace, found as written.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { duplicateKey } from '../../dist/api/duplicate-keys.js';

describe('duplicateKey', () => {
  it('finds a key given twice in one object, at any depth, and names its path', () => {
    const cases = [
      ['{"boot-source": {}, "drives": [], "boot-source": {}}', 'boot-source'],
      ['{"drives": [{"drive_id": "a"}, {"drive_id": "b", "path_on_host": "x", "path_on_host": "y"}]}', 'drives[1].path_on_host'],
      ['{"a": {"b": {"c": 1, "c": 2}}}', 'a.b.c'],
      ['[{"x": 1}, {"y": 1, "y": 1}]', '[1].y'],
      // Escapes are undone before comparing: the two keys are the same string to JSON.parse.
      ['{"kernel_image_path": "a", "kernel\\u005fimage_path": "b"}', 'kernel_image_path'],
      ['{"a b": {"": 1, "": 2}}', '["a b"][""]'],
      // The first one found is named.
      ['{"p": 1, "q": {"r": 1, "r": 2}, "p": 2}', 'q.r'],
    ];
    for (const [text, path] of cases) {
      JSON.parse(text); // well-formed, as the callers pass it
      assert.equal(duplicateKey(text), path, text);
    }
  });

  it('lets the same key appear in different objects, and passes every well-formed text without one', () => {
    for (const text of [
      '{}', '[]', '1', '"x"', 'null',
      '{"drives": [{"drive_id": "a", "path_on_host": "x"}, {"drive_id": "b", "path_on_host": "y"}]}',
      '{"a": {"id": 1}, "b": {"id": 2}, "id": 3}',
      '{"a": "\\"a\\": 1, \\"a\\": 2"}', // keys inside a string value are not keys
      '{"A": 1, "a": 2}', // keys are case-sensitive
    ]) assert.equal(duplicateKey(text), undefined, text);
  });
});
