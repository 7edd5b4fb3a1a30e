// SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
//
// Drives Debian's chromium (headless, through playwright-core, which downloads no browser)
// through the web buddy list (examples/clients/web/) served by the demo broker, and asserts
// what the page shows while alice goes online, changes her state and goes offline, and while
// bob, logged in on the page, sets his own status. Started by test_web_buddy_list.sh inside a
// private network namespace; every wait is for something on the page or a process, bounded.
//
// alice comes and goes with the Python example, carol with the C example (PRESENCE_DEVICE).
// Chromium runs with Playwright's own flags (--headless, --no-sandbox here, --user-data-dir of
// a fresh profile folder) plus the ones below.
//
// Environment: PAGE_URL (http://127.0.0.1:9001/), MQTT_PORT (1883), SCREENSHOT and
// SCREENSHOT_OFFLINE (.png paths), PRESENCE_DEVICE (the C example), CHROMIUM (/usr/bin/chromium),
// PAGE_USER and PAGE_PASSWORD (the HTTP Basic credentials the browser answers with when the
// server asks for them, as Mosquitto 2.1's http_api listener does; none by default).
'use strict';

const { chromium } = require('playwright-core');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const pageUrl = process.env.PAGE_URL || 'http://127.0.0.1:9001/';
const mqttPort = process.env.MQTT_PORT || '1883';
const examples = process.env.EXAMPLES || `${__dirname}/../../examples/clients`;
const device = process.env.PRESENCE_DEVICE || `${__dirname}/../../build/examples/clients/c/device`;
const timeout = 20000; // ms, for every wait on the page
let failures = 0;

function check(ok, what) {
  console.log(`${ok ? 'PASS' : 'FAIL'}: ${what}`);
  if (!ok) failures++;
}

// The text of user NAME's row, once the row matches `available` (true/false) and `pattern`.
async function waitForRow(page, name, available, pattern, what) {
  const row = page.locator(`li[data-user="${name}"][data-available="${available}"]`);
  try {
    await row.filter({ hasText: pattern }).waitFor({ timeout });
    check(true, what);
  } catch (e) {
    const rows = await page.locator('#buddies li').allInnerTexts();
    check(false, `${what} (the page shows: ${JSON.stringify(rows)})`);
  }
  return (await row.count()) ? row.first().innerText() : '';
}

async function main() {
  // A fresh profile for every run, removed at the end (--user-data-dir).
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'presence-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    chromiumSandbox: false, // adds --no-sandbox: root in a container has no usable sandbox
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout,
    viewport: { width: 720, height: 300 },
    httpCredentials: process.env.PAGE_USER
      ? { username: process.env.PAGE_USER, password: process.env.PAGE_PASSWORD || '' }
      : undefined,
  });
  let alice = null;
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => console.log(`page console: ${msg.text()}`));
    page.on('pageerror', (err) => check(false, `no script error on the page: ${err.message}`));
    await page.goto(pageUrl, { timeout });
    // A wrong password: the page says so, stops trying and keeps the login form.
    await page.fill('#username', 'bob');
    await page.fill('#password', 'not-bobs');
    await page.click('#login button');
    await page.locator('#status', { hasText: 'Error:' }).waitFor({ timeout });
    check(await page.locator('#login').isVisible(), `a wrong password is refused: "${await page.locator('#status').innerText()}"`);
    await page.fill('#username', 'bob');
    await page.fill('#password', 'bob-pw');
    await page.click('#login button');
    await page.locator('#status', { hasText: 'Connected as bob.' }).waitFor({ timeout });
    check(true, 'bob logs in over websockets');
    await waitForRow(page, 'bob', true, /bob \(you\).*online since/s, 'bob is shown online (green)');

    // alice comes online with the Python example, and sets her status through it.
    alice = spawn('/usr/bin/python3', [`${examples}/python/buddy_list.py`, '-H', '127.0.0.1', '-p', mqttPort,
      '-u', 'alice', '-P', 'alice-pw'], { stdio: ['pipe', 'ignore', 'inherit'] });
    await waitForRow(page, 'alice', true, /online since/, 'alice goes online (Python example): green dot, "online since"');
    alice.stdin.write('in a meeting\n');
    await waitForRow(page, 'alice', true, 'status: in a meeting', 'alice\'s new state is shown');

    // bob sets his own status with the page's form.
    await page.fill('#mystatus', 'busy');
    await page.click('#mine button');
    await waitForRow(page, 'bob', true, 'status: busy', 'bob\'s status set from the page is shown');

    // carol's device (the C example) wakes up once, reports and goes back to sleep: a grey dot.
    execFileSync(device, ['-h', '127.0.0.1', '-p', mqttPort, '-u', 'carol', '-P', 'carol-pw', '-b', '87', '-n', '1']);
    await waitForRow(page, 'carol', false, /offline since/, 'carol\'s device (C example) came and went: shown offline (grey)');
    if (process.env.SCREENSHOT) {
      await page.screenshot({ path: process.env.SCREENSHOT });
      console.log(`screenshot: ${process.env.SCREENSHOT}`);
    }

    // alice quits the Python example (end of its input): she goes offline, her state cleared.
    const exited = new Promise((resolve) => alice.once('exit', resolve));
    alice.stdin.end();
    await exited;
    alice = null;
    const text = await waitForRow(page, 'alice', false, /offline since/, 'alice goes offline: grey dot, "offline since"');
    check(!text.includes('status'), `alice's state is cleared when she goes offline (row: ${JSON.stringify(text)})`);
    if (process.env.SCREENSHOT_OFFLINE) await page.screenshot({ path: process.env.SCREENSHOT_OFFLINE });
  } finally {
    if (alice) alice.kill('SIGKILL');
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => {
  console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
  process.exit(failures ? 1 : 0);
}, (err) => {
  console.log(`FAIL: ${err.stack || err}`);
  process.exit(1);
});
