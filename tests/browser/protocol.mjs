// What the real-browser drivers (driver.mjs, serweb.mjs) share: their line protocol with the
// Rust test (tests/common/browser.rs) and the bounded step.
//
// On stdout `EVENT {...}` as a driver goes, `READY {...}` when it waits for the test and
// `RESULT {...}` at the end; on stdin one line (`go`) per READY.
import { createInterface } from 'node:readline';

export const emit = (kind, obj) => process.stdout.write(`${kind} ${JSON.stringify(obj)}\n`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// `step(name, fn)`: runs fn within `stepMs`, emits its EVENT with the time it took, calls
// `done(name)` after it; an error names the step.
export function stepper(stepMs, done = () => {}) {
  return async function step(name, fn) {
    let timer;
    const limit = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${name}: no result within ${stepMs} ms`)), stepMs);
    });
    try {
      const t = Date.now();
      const value = await Promise.race([fn(), limit]);
      emit('EVENT', { step: name, ms: Date.now() - t });
      done(name);
      return value;
    } catch (e) {
      throw new Error(`${name}: ${e.message || e}`);
    } finally {
      clearTimeout(timer);
    }
  };
}

// Stdin lines, one at a time: `nextLine()` resolves with the next one, or null once stdin
// closed; `close()` stops reading.
export function stdinLines() {
  const lines = createInterface({ input: process.stdin });
  const pending = [];
  const waiting = [];
  lines.on('line', (l) => (waiting.length ? waiting.shift()(l) : pending.push(l)));
  lines.on('close', () => waiting.splice(0).forEach((w) => w(null)));
  return {
    nextLine: () =>
      pending.length ? Promise.resolve(pending.shift()) : new Promise((r) => waiting.push(r)),
    close: () => lines.close(),
  };
}
