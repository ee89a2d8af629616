// The real-browser driver of tests/serweb.rs: Debian's chromium (headless), driven by
// playwright-core, against serweb on 127.0.0.1 beside a running ser. Nothing is downloaded.
//
// Usage: node serweb.mjs '<config JSON>' (see `cfg`). It talks to the test in lines: on stdout
// `EVENT {...}` as it goes, `READY {...}` when it waits for the test (which then does its SIP
// part: sipsak registers a phone, a call fails) and `RESULT {...}` at the end; on stdin one
// line (`go`) per READY.
//
// Steps: the admin logs in and creates the user and a user named <script>alert(1)</script>
// (shown as text, no dialog ever opens); READY; the user logs in and sees the phone sipsak
// registered on "my phones"; the admin sends the user an IM (the sipp UAS behind the contact
// answers); the user adds a phonebook entry and clicks Call (the UAS gets the REFER); READY; the user sees the failed call under missed calls, changes the
// password and logs in again with it; POSTs without or with a wrong CSRF token are refused
// (403); the user reading the admin pages or changing another user's phonebook entry is
// refused (403); the dashboard shows charts; the last messages from ser's capture file list
// the IM and the failed call's Call-ID has its ladder. Screenshots of the main pages go to cfg.shots.
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { emit, stdinLines, stepper } from './protocol.mjs';

const cfg = JSON.parse(process.argv[2]);
// cfg: { base: serweb's URL; domain; admin: {user, password}; user: {user, password,
// newPassword}; serAddr: host:port of ser (the IM's target); uasPort; shots: a folder;
// userDataDir; chromium; stepMs }
const stepMs = cfg.stepMs || 15000;
const result = { ok: false, steps: [], dialogs: [], checks: {} };

const step = stepper(stepMs, (name) => result.steps.push(name));

const lines = stdinLines();
const nextLine = lines.nextLine;
async function ready(what) {
  emit('READY', { what });
  const l = await nextLine();
  if (l !== 'go') throw new Error(`the test said ${l} after ${what}`);
}

const check = (name, cond, detail) => {
  result.checks[name] = cond ? true : detail || false;
  if (!cond) throw new Error(`check ${name} failed: ${JSON.stringify(detail)}`);
};

let browser;
async function main() {
  browser = await step('launch chromium', () =>
    chromium.launch({
      executablePath: cfg.chromium || '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    }),
  );
  // Two people, two cookie jars.
  const newPage = async () => {
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    const page = await ctx.newPage();
    page.on('dialog', async (d) => {
      result.dialogs.push(d.message());
      await d.dismiss();
    });
    return { ctx, page };
  };
  const shot = async (page, name) => {
    if (cfg.shots) await page.screenshot({ path: join(cfg.shots, `${name}.png`), fullPage: true });
  };
  const login = async (page, who, password) => {
    await page.goto(`${cfg.base}/login`);
    await page.fill('#user', who.user);
    await page.fill('#domain', cfg.domain);
    await page.fill('#password', password);
    await Promise.all([page.waitForNavigation(), page.click('#login')]);
  };
  const text = async (page, sel) => (await page.locator(sel).innerText()).trim();

  const admin = await newPage();
  await step('admin logs in', async () => {
    await admin.page.goto(`${cfg.base}/login`);
    await shot(admin.page, 'login');
    await login(admin.page, cfg.admin, cfg.admin.password);
    check('admin lands on users', admin.page.url().endsWith('/admin/users'), admin.page.url());
  });
  const addUser = async (user, password) => {
    await admin.page.fill('#new_user', user);
    await admin.page.fill('#new_domain', cfg.domain);
    await admin.page.fill('#new_password', password);
    await Promise.all([admin.page.waitForNavigation(), admin.page.click('#add')]);
  };
  await step('admin creates the user', async () => {
    await addUser(cfg.user.user, cfg.user.password);
    const users = await text(admin.page, '#users');
    check('user listed', users.includes(`${cfg.user.user}@${cfg.domain}`), users);
  });
  const evil = '<script>alert(1)</script>';
  await step('a user named <script>alert(1)</script> is shown as text', async () => {
    await addUser(evil, 'evilpass1');
    const users = await text(admin.page, '#users');
    check('evil name shown literally', users.includes(`${evil}@${cfg.domain}`), users);
    const html = await admin.page.content();
    check('no script element from the name', !html.includes(evil), 'raw markup in the page');
    const scripts = await admin.page.locator('script').count();
    check('no script elements at all', scripts === 0, scripts);
    await shot(admin.page, 'admin-users');
  });

  await ready('user created');

  const user = await newPage();
  await step('the user sees the phone sipsak registered', async () => {
    await login(user.page, cfg.user, cfg.user.password);
    check('user lands on my phones', user.page.url().endsWith('/phones'), user.page.url());
    const contacts = await text(user.page, '#contacts');
    check('contact listed', contacts.includes(`127.0.0.1:${cfg.uasPort}`), contacts);
    check('live from ser', (await text(user.page, '#source')) === 'live from ser');
    check('transport shown', contacts.includes('UDP'), contacts);
    check('user agent shown', contacts.toLowerCase().includes('sipsak'), contacts);
    await shot(user.page, 'my-phones');
  });
  await step('the admin sends the user an IM through ser', async () => {
    await admin.page.goto(`${cfg.base}/message`);
    await admin.page.fill('#to', `sip:${cfg.user.user}@${cfg.serAddr}`);
    await admin.page.fill('#text', 'hello from serweb');
    await Promise.all([admin.page.waitForNavigation({ timeout: stepMs }), admin.page.click('#send')]);
    const notice = await text(admin.page, '#notice');
    check('IM delivered', notice.startsWith('delivered'), notice);
    await shot(admin.page, 'message');
  });

  await step('phonebook', async () => {
    await user.page.goto(`${cfg.base}/phonebook`);
    await user.page.fill('#addentry input[name=fname]', 'Root');
    await user.page.fill('#addentry input[name=lname]', 'Admin');
    await user.page.fill('#addentry input[name=sip_uri]', `sip:${cfg.admin.user}@${cfg.domain}`);
    await Promise.all([user.page.waitForNavigation(), user.page.click('#addentry button')]);
    const pb = await text(user.page, '#phonebook');
    check('entry added', (await user.page.locator('#phonebook input[value=Root]').count()) === 1, pb);
    await shot(user.page, 'phonebook');
  });
  await step('click to call: ser sends the phone a REFER', async () => {
    await Promise.all([
      user.page.waitForNavigation({ timeout: stepMs }),
      user.page.click('#phonebook form[action$="/call"] button'),
    ]);
    const notice = await text(user.page, '#notice');
    check('REFER accepted', notice.startsWith('your phone was asked to call'), notice);
  });

  await ready('im sent');

  await step('the failed call is under missed calls', async () => {
    await user.page.goto(`${cfg.base}/calls?kind=missed`);
    const calls = await text(user.page, '#calls');
    check('missed call listed', calls.includes('caller@') && calls.includes('INVITE'), calls);
    await shot(user.page, 'missed-calls');
    // Filtered by another peer: gone.
    await user.page.goto(`${cfg.base}/calls?kind=missed&peer=nobody-like-this`);
    check('filter by peer', (await user.page.locator('#nocalls').count()) === 1);
  });
  await user.page.goto(`${cfg.base}/phonebook`);
  const entryId = await user.page
    .locator('#phonebook form[action$="/edit"]')
    .first()
    .getAttribute('action')
    .then((a) => a.split('/')[2]);

  await step('POSTs without or with a wrong CSRF token are refused', async () => {
    const r1 = await user.ctx.request.post(`${cfg.base}/phonebook/add`, {
      form: { fname: 'x', lname: 'y', sip_uri: 'sip:x@y' }, maxRedirects: 0,
    });
    check('no token: 403', r1.status() === 403, r1.status());
    const r2 = await user.ctx.request.post(`${cfg.base}/phonebook/add`, {
      form: { csrf: 'f'.repeat(64), fname: 'x', lname: 'y', sip_uri: 'sip:x@y' }, maxRedirects: 0,
    });
    check('wrong token: 403', r2.status() === 403, r2.status());
    // The admin's valid token is not the user's.
    const adminToken = await admin.page.locator('input[name=csrf]').first().getAttribute('value');
    const r3 = await user.ctx.request.post(`${cfg.base}/phonebook/add`, {
      form: { csrf: adminToken, fname: 'x', lname: 'y', sip_uri: 'sip:x@y' }, maxRedirects: 0,
    });
    check("another session's token: 403", r3.status() === 403, r3.status());
  });
  await step("the user cannot reach the admin pages or another user's data", async () => {
    const r = await user.page.goto(`${cfg.base}/admin/users`);
    check('admin users: 403', r.status() === 403, r.status());
    const r2 = await user.page.goto(`${cfg.base}/admin/dashboard`);
    check('dashboard: 403', r2.status() === 403, r2.status());
    // The admin, with a valid token of the admin's own session, on the user's entry.
    await admin.page.goto(`${cfg.base}/phonebook`);
    const tok = await admin.page.locator('input[name=csrf]').first().getAttribute('value');
    const r3 = await admin.ctx.request.post(`${cfg.base}/phonebook/${entryId}/delete`, {
      form: { csrf: tok }, maxRedirects: 0,
    });
    check("another user's phonebook entry: 403", r3.status() === 403, r3.status());
    await user.page.goto(`${cfg.base}/phonebook`);
    check('entry still there', (await user.page.locator('#phonebook input[value=Root]').count()) === 1);
  });
  await step('the user changes the password and logs in with it', async () => {
    await user.page.goto(`${cfg.base}/password`);
    await user.page.fill('#current', cfg.user.password);
    await user.page.fill('#new', cfg.user.newPassword);
    await user.page.fill('#confirm', cfg.user.newPassword);
    await Promise.all([user.page.waitForNavigation(), user.page.click('#change')]);
    check('changed', (await text(user.page, '#notice')).startsWith('password changed'));
    await shot(user.page, 'password');
    await Promise.all([user.page.waitForNavigation(), user.page.click('.logout button')]);
    await login(user.page, cfg.user, cfg.user.password);
    check('old password refused', (await text(user.page, '#error')).includes('wrong'));
    await login(user.page, cfg.user, cfg.user.newPassword);
    check('new password works', user.page.url().endsWith('/phones'), user.page.url());
  });
  await step('the dashboard draws charts from ser\'s metrics', async () => {
    await admin.page.goto(`${cfg.base}/admin/dashboard`);
    // Give the sampler (1 s in the test) a few points.
    await admin.page.waitForTimeout(2500);
    await admin.page.goto(`${cfg.base}/admin/dashboard`);
    const n = await admin.page.locator('#charts svg.chart').count();
    check('charts', n >= 6, n);
    check('no scrape error', (await admin.page.locator('#error').count()) === 0,
      await admin.page.locator('#error').allInnerTexts());
    await shot(admin.page, 'dashboard');
  });
  await step('the last messages and the ladder of the failed call', async () => {
    await admin.page.goto(`${cfg.base}/admin/capture`);
    const list = await text(admin.page, '#messages');
    check('the IM is listed', list.includes(`MESSAGE sip:${cfg.user.user}@`), list);
    await shot(admin.page, 'capture');
    await Promise.all([
      admin.page.waitForNavigation(),
      admin.page.click('#messages a:text-is("serweb-missed-call")'),
    ]);
    const ladder = (await admin.page.locator('#ladder').textContent()) || '';
    check('ladder has the INVITE', ladder.includes('INVITE'), ladder);
    check('ladder has the failure', ladder.includes('408'), ladder);
    await shot(admin.page, 'ladder');
  });
  check('no dialog ever opened', result.dialogs.length === 0, result.dialogs);
  result.ok = true;
}

try {
  await main();
} catch (e) {
  result.error = String(e.message || e);
} finally {
  emit('RESULT', result);
  if (browser) await browser.close().catch(() => {});
  process.exit(0);
}
