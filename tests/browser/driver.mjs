// The real-browser driver of tests/browser.rs: Debian's chromium (headless, fake media
// devices), driven by playwright-core, with two pages served from a tiny static server on
// 127.0.0.1: alice on JsSIP over ws, bob on SIP.js over wss. Nothing is downloaded: the pages
// are bundled here with esbuild, the browser is /usr/bin/chromium.
//
// Usage: node driver.mjs '<config JSON>' (see `cfg` below; `mode: 'bridge'` runs the media
// relay test's steps instead: alice alone calls `callee`, a plain RTP phone behind rtpengine). It talks to the test in lines:
// on stdout `EVENT {...}` as it goes and `RESULT {...}` at the end; on stdin it waits for one
// line (`go`) while the test runs its sipp callers against the registered pages.
//
// Steps: both register; alice calls bob, bob answers, audio flows both ways (getStats:
// inbound-rtp bytesReceived > 0 on both pages), alice hangs up and both see the call end;
// each page sends a MESSAGE to the sipp UAS; then (after `go`) the pages' logs show what the
// sipp callers sent them: a MESSAGE each, and an INVITE each (answered, ended by sipp's BYE).
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { chromium } from 'playwright-core';
import { emit, sleep, stdinLines, stepper } from './protocol.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const cfg = JSON.parse(process.argv[2]);
// cfg: { ws, wss: server URLs; domain: host:port of the users' AORs; spki: base64 SHA-256 of
// the wss certificate's public key; userDataDir: a fresh folder; uas: the sipp UAS's URI;
// chromium: the browser's path; stepMs: the limit of one step }
const stepMs = cfg.stepMs || 15000;

const step = stepper(stepMs);

const lines = stdinLines();
const nextLine = lines.nextLine;

async function bundle(entry) {
  const out = await esbuild.build({
    entryPoints: [join(here, entry)],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'chrome120',
    write: false,
    logLevel: 'silent',
  });
  return out.outputFiles[0].text;
}

function serve(files) {
  const server = createServer((req, res) => {
    const body = files[req.url.split('?')[0]];
    if (req.url === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    const type = req.url.endsWith('.js') ? 'text/javascript' : 'text/html';
    res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' });
    res.end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const page = (title, script) =>
  `<!doctype html><meta charset="utf-8"><title>${title}</title><script src="/${script}"></script>`;

const result = { ok: false };
let context = null;
let server = null;
const consoleLines = [];

try {
  const [jssip, sipjs] = await step('bundle', () =>
    Promise.all([bundle('page-jssip.mjs'), bundle('page-sipjs.mjs')]),
  );
  server = await serve({
    '/jssip.html': page('JsSIP', 'jssip.js'),
    '/jssip.js': jssip,
    '/sipjs.html': page('SIP.js', 'sipjs.js'),
    '/sipjs.js': sipjs,
  });
  const origin = `http://127.0.0.1:${server.address().port}`;

  context = await step('launch chromium', () =>
    chromium.launchPersistentContext(cfg.userDataDir, {
      executablePath: cfg.chromium || '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--use-fake-device-for-media-stream',
        '--use-fake-ui-for-media-stream',
        // The only network is loopback (the test runs in a namespace with nothing else):
        // WebRTC must gather candidates there.
        '--allow-loopback-in-peer-connection',
        // Trust the wss server's certificate, and no other: its key's SPKI hash.
        `--ignore-certificate-errors-spki-list=${cfg.spki}`,
      ],
    }),
  );
  const open = async (path) => {
    const p = await context.newPage();
    p.on('console', (m) => consoleLines.push(`${path}: ${m.type()}: ${m.text()}`));
    p.on('pageerror', (e) => consoleLines.push(`${path}: pageerror: ${e.message}`));
    await p.goto(`${origin}/${path}`);
    await p.waitForFunction(() => window.phone !== undefined);
    return p;
  };
  if (cfg.mode === 'bridge') {
    // tests/browser.rs's media relay test: alice (JsSIP over ws, DTLS-SRTP and ICE) calls a
    // plain RTP phone (sipp -rtp_echo) through ser, rtpengine bridging the two; the phone's
    // echo must come back to the page as SRTP.
    const alice = await step('open JsSIP page', () => open('jssip.html'));
    result.libraries = { alice: await alice.evaluate(() => window.phone.library) };
    await step('alice registers over ws', () =>
      alice.evaluate((c) => window.phone.register(c), {
        server: cfg.ws,
        uri: `sip:alice@${cfg.domain}`,
      }),
    );
    const id = await step('alice calls the RTP phone', () =>
      alice.evaluate((t) => window.phone.call(t), cfg.callee),
    );
    result.media = await step('the echo comes back', async () => {
      for (;;) {
        const a = await alice.evaluate((i) => window.phone.stats(i), id);
        if (a && a.bytesReceived > 0 && a.packetsReceived >= 10) return a;
        await sleep(200);
      }
    });
    result.remoteSdp = await alice.evaluate((i) => window.phone.remoteSdp(i), id);
    if (cfg.holdMs) await sleep(cfg.holdMs);
    await step('alice hangs up', () => alice.evaluate((i) => window.phone.hangup(i), id));
    await step('the call ends', async () => {
      for (;;) {
        const a = (await alice.evaluate(() => window.phone.log())).calls[id];
        if (a.ended) return;
        await sleep(100);
      }
    });
    result.alice = await alice.evaluate(() => window.phone.log());
    result.ok = true;
  } else {
    const alice = await step('open JsSIP page', () => open('jssip.html'));
    const bob = await step('open SIP.js page', () => open('sipjs.html'));
    result.libraries = {
      alice: await alice.evaluate(() => window.phone.library),
      bob: await bob.evaluate(() => window.phone.library),
    };

    const aor = (user) => `sip:${user}@${cfg.domain}`;
    await step('alice registers over ws', () =>
      alice.evaluate((c) => window.phone.register(c), { server: cfg.ws, uri: aor('alice') }),
    );
    await step('bob registers over wss', () =>
      bob.evaluate((c) => window.phone.register(c), { server: cfg.wss, uri: aor('bob') }),
    );
    result.registered = true;

    // alice calls bob; bob's page answers by itself.
    const aliceCall = await step('alice calls bob, bob answers', () =>
      alice.evaluate((t) => window.phone.call(t), aor('bob')),
    );
    const bobCall = await step('bob sees the call established', async () => {
      for (;;) {
        const log = await bob.evaluate(() => window.phone.log());
        const c = log.calls.find((x) => x.direction === 'incoming' && x.confirmed);
        if (c) return c.id;
        await sleep(100);
      }
    });
    // Media both ways: inbound-rtp bytes on both sides, a few packets' worth (the first
    // packet alone would say little more than that ICE and DTLS came up).
    const flowing = (x) => x && x.bytesReceived > 0 && x.packetsReceived >= 10;
    result.media = await step('audio flows both ways', async () => {
      for (;;) {
        const a = await alice.evaluate((id) => window.phone.stats(id), aliceCall);
        const b = await bob.evaluate((id) => window.phone.stats(id), bobCall);
        if (flowing(a) && flowing(b)) return { alice: a, bob: b };
        await sleep(200);
      }
    });
    await step('alice hangs up', () => alice.evaluate((id) => window.phone.hangup(id), aliceCall));
    await step('both see the call end', async () => {
      for (;;) {
        const a = (await alice.evaluate(() => window.phone.log())).calls[aliceCall];
        const b = (await bob.evaluate(() => window.phone.log())).calls[bobCall];
        if (a.ended && b.ended) return;
        await sleep(100);
      }
    });

    // MESSAGE to the sipp UAS from each page.
    result.sentMessages = {
      alice: await step('alice sends a MESSAGE to sipp', () =>
        alice.evaluate((t) => window.phone.sendMessage(t, 'hello sipp from alice'), cfg.uas),
      ),
      bob: await step('bob sends a MESSAGE to sipp', () =>
        bob.evaluate((t) => window.phone.sendMessage(t, 'hello sipp from bob'), cfg.uas),
      ),
    };

    // The test's sipp callers now send a MESSAGE and an INVITE to each page.
    emit('READY', {});
    const go = await nextLine();
    if (go === null) throw new Error('the test closed stdin before `go`');

    result.alice = await alice.evaluate(() => window.phone.log());
    result.bob = await bob.evaluate(() => window.phone.log());
    result.ok = true;
  }
} catch (e) {
  result.error = String(e.message || e);
} finally {
  result.console = consoleLines.slice(-40);
  emit('RESULT', result);
  if (context) await context.close().catch(() => {});
  if (server) server.close();
  lines.close();
}
process.exit(0);
