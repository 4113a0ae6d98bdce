// The TypeScript declarations (index.d.ts) compile under `strict` and describe the README's
// uses of the client: checked with the TypeScript compiler, as a user's build would.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const usage = fileURLToPath(new URL('./types/usage.ts', import.meta.url));

test('the declarations type the documented uses under strict TypeScript', async () => {
  const args = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext'];
  args.push('--target', 'es2022', '--lib', 'es2022,dom', usage);
  const run = await promisify(execFile)(process.execPath, [tsc, ...args]).catch((error) => error);
  assert.equal(run.code ?? 0, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});
