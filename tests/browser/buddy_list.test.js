// SPDX-License-Identifier: EPL-2.0 OR BSD-3-Clause
//
// Drives Debian's chromium (headless, through playwright-core, which downloads no browser)
// through the web dashboard (examples/clients/web/) served by the demo broker, and asserts what
// the page shows: the online count, the order (online first, then by name), the search box,
// states as "key: value" lines (nested ones flattened, hostile ones shown as text), "since"
// with a date when it is not today (against the page's clock, set by the test), the phone
// layout, the "appear invisible" switch (another watcher's page loses the user's row and gets
// it back), and the status line through a broker restart. Started by test_web_buddy_list.sh
// inside a private network namespace; every wait is for something on the page or a process,
// bounded.
//
// Real clients: alice and dave stay online with the Python example (dave's nested state is set
// with mosquitto_pub), carol, erin and frank come and go with the C example (PRESENCE_DEVICE).
// Chromium runs with Playwright's own flags (--headless, --no-sandbox here, a fresh temporary
// profile) plus the ones below; the pages run in English and UTC, so that dates read the same
// everywhere.
//
// The broker restart: the test prints "BROKER stop" and then "BROKER start" on stdout, alone on
// their lines; test_web_buddy_list.sh, which reads the output line by line, stops and starts
// the demo broker when it reads them (the same configuration and state file).
//
// Environment: PAGE_URL (http://127.0.0.1:9001/), MQTT_PORT (1883), SCREENSHOT and
// SCREENSHOT_PHONE (.png paths, 900 and 390 px wide), PRESENCE_DEVICE (the C example), CHROMIUM
// (/usr/bin/chromium), PAGE_USER and PAGE_PASSWORD (the HTTP Basic credentials the browser
// answers with when the server asks for them, as Mosquitto 2.1's http_api listener does; none
// by default).
'use strict';

const { chromium } = require('playwright-core');
const { spawn, execFileSync } = require('node:child_process');

const pageUrl = process.env.PAGE_URL || 'http://127.0.0.1:9001/';
const mqttPort = process.env.MQTT_PORT || '1883';
const examples = process.env.EXAMPLES || `${__dirname}/../../examples/clients`;
const device = process.env.PRESENCE_DEVICE || `${__dirname}/../../build/examples/clients/c/device`;
const timeout = 20000; // ms, for every wait on the page
const day = 24 * 60 * 60 * 1000;
let failures = 0;

function check(ok, what) {
  console.log(`${ok ? 'PASS' : 'FAIL'}: ${what}`);
  if (!ok) failures++;
}

// Runs a bounded wait; a timeout is a failed check that says what the page showed.
async function expectOn(page, what, wait) {
  try {
    await wait();
    check(true, what);
  } catch (e) {
    const rows = await page.locator('#buddies li').allInnerTexts().catch(() => []);
    const status = await page.locator('#status').innerText().catch(() => '?');
    check(false, `${what} (${e.message.split('\n')[0]}; status "${status}", rows ${JSON.stringify(rows)})`);
  }
}

// Waits until user NAME's row matches `available` (true/false) and `pattern`; returns its text.
async function waitForRow(page, name, available, pattern, what) {
  const row = page.locator(`li[data-user="${name}"][data-available="${available}"]`);
  await expectOn(page, what, () => row.filter({ hasText: pattern }).waitFor({ timeout }));
  return (await row.count()) ? row.first().innerText() : '';
}

// Waits until the rows are exactly these users, in this order.
function waitForOrder(page, names, what) {
  return expectOn(page, `${what}: ${names.join(', ')}`, () => page.waitForFunction((expected) =>
    JSON.stringify([...document.querySelectorAll('#buddies li[data-user]')].map((li) => li.dataset.user)) === expected,
  JSON.stringify(names), { timeout }));
}

function waitForCount(page, text, what) {
  return expectOn(page, `${what}: "${text}"`, () => page.locator('#count', { hasText: text }).waitFor({ timeout }));
}

// A long-lived session of USER with the Python example; its stdin sets the user's status.
function pythonClient(user) {
  return spawn('/usr/bin/python3', [`${examples}/python/buddy_list.py`, '-H', '127.0.0.1', '-p', mqttPort,
    '-u', user, '-P', `${user}-pw`], { stdio: ['pipe', 'ignore', 'inherit'] });
}

async function stop(child) {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.stdin.end();
  await exited;
}

// One wake-up of the C example as USER: online, a state, offline again.
function deviceWakeUp(user) {
  execFileSync(device, ['-h', '127.0.0.1', '-p', mqttPort, '-u', user, '-P', `${user}-pw`, '-b', '87', '-n', '1']);
}

async function logIn(page, user, password) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#login button');
}

// Sets the page's clock (Date) to `time` and re-renders the list (a search re-renders it).
async function pageTime(page, time, filter) {
  await page.clock.setFixedTime(time);
  await page.fill('#filter', '');
  await page.fill('#filter', filter);
}

// The "since" text and title of NAME's row.
async function since(page, name) {
  const cell = page.locator(`li[data-user="${name}"] .since`);
  return { text: (await cell.innerText()).replace(/\s+/g, ' '), title: await cell.getAttribute('title') };
}

// What the page should write for epoch-ms `t` in en-US and UTC: "Dec 4" and "4:53 PM".
function utcParts(t) {
  const d = new Date(t);
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const h = d.getUTCHours() % 12 || 12;
  const m = String(d.getUTCMinutes()).padStart(2, '0');
  return { date: `${months[d.getUTCMonth()]} ${d.getUTCDate()}`, time: `${h}:${m} ${d.getUTCHours() < 12 ? 'AM' : 'PM'}`, year: d.getUTCFullYear() };
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    chromiumSandbox: false, // adds --no-sandbox: root in a container has no usable sandbox
    args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    timeout,
  });
  const contextOptions = {
    locale: 'en-US',
    timezoneId: 'UTC',
    httpCredentials: process.env.PAGE_USER
      ? { username: process.env.PAGE_USER, password: process.env.PAGE_PASSWORD || '' }
      : undefined,
  };
  const clients = [];
  try {
    const desktop = await browser.newContext({ ...contextOptions, viewport: { width: 900, height: 560 } });
    const page = await desktop.newPage();
    page.on('console', (msg) => console.log(`page console: ${msg.text()}`));
    page.on('pageerror', (err) => check(false, `no script error on the page: ${err.message}`));
    await page.goto(pageUrl, { timeout });
    check((await page.locator('#count').innerText()).trim() === '0 of 0 online', 'before logging in: "0 of 0 online"');

    // A wrong password: the page says so, stops trying and keeps the login form.
    await logIn(page, 'bob', 'not-bobs');
    await expectOn(page, 'a wrong password is refused', () =>
      page.locator('#status[data-state="error"]', { hasText: 'Error:' }).waitFor({ timeout }));
    check(await page.locator('#login').isVisible(), 'the login form stays after a refused login');
    await logIn(page, 'bob', 'bob-pw');
    await expectOn(page, 'bob logs in over websockets: "Connected as bob."', () =>
      page.locator('#status[data-state="connected"]', { hasText: /^Connected as bob\.$/ }).waitFor({ timeout }));
    await waitForRow(page, 'bob', true, /bob \(you\).*online since/s, 'bob is shown online (green)');
    check(!(await page.locator('#login').isVisible()) && await page.locator('#mine').isVisible(),
      'once connected, the login form gives way to the status form');
    await waitForCount(page, '1 of 1 online', 'the count');

    // alice (Python example) comes online and sets a status that is HTML; dave (Python
    // example) too, and sets a nested state with mosquitto_pub (a second session of his).
    const alice = pythonClient('alice');
    const dave = pythonClient('dave');
    clients.push(alice, dave);
    await waitForRow(page, 'alice', true, /online since/, 'alice goes online (Python example)');
    const hostile = '<img src=x onerror="window.pwned=1"> in a meeting';
    alice.stdin.write(`${hostile}\n`);
    await waitForRow(page, 'alice', true, `status: ${hostile}`, 'alice\'s status (HTML) is shown as text');
    check(await page.locator('#buddies img').count() === 0 && !(await page.evaluate(() => window.pwned)),
      'alice\'s status is not injected into the page (no <img>, its onerror never ran)');

    await waitForRow(page, 'dave', true, /online since/, 'dave goes online (Python example)');
    // A long value without a space, which must wrap on a phone.
    const link = `https://intranet.example.com/rooms/hq-4.01/booking?from=09:00&to=17:00&ref=${'a1b2c3d4'.repeat(6)}`;
    const nested = {
      location: { building: 'HQ', room: '4.01', desk: {} },
      devices: ['phone', 'laptop'],
      history: [{ at: 'home' }, { at: 'office' }],
      battery: 87,
      on_call: true,
      '<b>bold': { '<i>deep</i>': '<script>window.pwned=2</script>a&b' },
      link,
    };
    execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', mqttPort, '-u', 'dave', '-P', 'dave-pw', '-q', '1',
      '-t', 'presence/dave/state', '-m', JSON.stringify(nested)]);
    await waitForRow(page, 'dave', true, 'location.building: HQ', 'dave\'s nested state is shown');
    const lines = (await page.locator('li[data-user="dave"] .state > div').allInnerTexts()).sort();
    const expected = ['location.building: HQ', 'location.room: 4.01', 'location.desk: {}', 'devices: phone, laptop',
      'history[0].at: home', 'history[1].at: office', 'battery: 87', 'on_call: true',
      '<b>bold.<i>deep</i>: <script>window.pwned=2</script>a&b', `link: ${link}`].sort();
    check(JSON.stringify(lines) === JSON.stringify(expected),
      `nested state as one "key: value" line per value, nested keys joined with "." (${JSON.stringify(lines)})`);
    check(await page.locator('#buddies b, #buddies i, #buddies script').count() === 0 && !(await page.evaluate(() => window.pwned)),
      'HTML in nested keys and values is shown as text');

    // bob sets his own status with the page's form.
    await page.fill('#mystatus', 'busy');
    await page.click('#mine button');
    await waitForRow(page, 'bob', true, 'status: busy', 'bob\'s status set from the page is shown');

    // carol, erin and frank: a device (the C example) wakes up once and goes back to sleep.
    for (const user of ['frank', 'carol', 'erin']) {
      deviceWakeUp(user);
      await waitForRow(page, user, false, /offline since/, `${user}'s device (C example) came and went: shown offline (grey)`);
    }
    await waitForCount(page, '3 of 6 online', 'the count');
    await waitForOrder(page, ['alice', 'bob', 'dave', 'carol', 'erin', 'frank'], 'online users first, each group by name');

    // The search box: names and states, case-insensitive, with how many rows it leaves.
    for (const [needle, users] of [['ERIN', ['erin']], ['meeting', ['alice']], ['hq', ['dave']], ['b', ['bob', 'dave']]]) {
      await page.fill('#filter', needle);
      await waitForOrder(page, users, `the search "${needle}" shows`);
      check((await page.locator('#count').innerText()).trim() === `3 of 6 online (${users.length} shown)`,
        `the count says how many the search shows: "${await page.locator('#count').innerText()}"`);
    }
    await page.fill('#filter', 'nobody-here');
    await expectOn(page, 'a search that matches nobody says so', () =>
      page.locator('#buddies li.empty', { hasText: 'Nobody matches "nobody-here".' }).waitFor({ timeout }));
    await page.fill('#filter', '');
    await waitForOrder(page, ['alice', 'bob', 'dave', 'carol', 'erin', 'frank'], 'an empty search shows everybody again');
    if (process.env.SCREENSHOT) {
      await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
      console.log(`screenshot: ${process.env.SCREENSHOT}`);
    }

    // bob on his phone: a second session in a phone-sized, touch browser that honours the
    // page's meta viewport; nothing may stick out sideways.
    const phone = await browser.newContext({ ...contextOptions, viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const mobile = await phone.newPage();
    mobile.on('pageerror', (err) => check(false, `no script error on the phone: ${err.message}`));
    await mobile.goto(pageUrl, { timeout });
    await logIn(mobile, 'bob', 'bob-pw');
    await waitForRow(mobile, 'dave', true, 'location.building: HQ', 'the phone shows the list');
    await waitForCount(mobile, '3 of 6 online', 'the phone shows the count');
    const layout = await mobile.evaluate(() => ({
      width: window.innerWidth,
      scroll: document.documentElement.scrollWidth,
      right: Math.max(...[...document.querySelectorAll('body *')].map((el) => el.getBoundingClientRect().right)),
      filter: document.getElementById('filter').getBoundingClientRect().width,
    }));
    check(layout.width === 390, `the page lays itself out at the phone's width (meta viewport): ${layout.width} px`);
    check(layout.scroll <= layout.width && layout.right <= layout.width,
      `nothing wider than the phone, no horizontal scroll (scroll width ${layout.scroll}, rightmost edge ${layout.right})`);
    check(layout.filter >= 150, `the search box is usable on the phone (${layout.filter} px wide)`);
    if (process.env.SCREENSHOT_PHONE) await mobile.screenshot({ path: process.env.SCREENSHOT_PHONE, fullPage: true });
    await phone.close();

    // alice on the page too (a second session of hers): "appear invisible" removes her row from
    // bob's page (the zero-length message on presence/alice), her own page still shows her;
    // switched off, bob's page shows her again, state and all.
    const aliceContext = await browser.newContext({ ...contextOptions, viewport: { width: 900, height: 560 } });
    const alicePage = await aliceContext.newPage();
    alicePage.on('pageerror', (err) => check(false, `no script error on alice's page: ${err.message}`));
    await alicePage.goto(pageUrl, { timeout });
    await logIn(alicePage, 'alice', 'alice-pw');
    await waitForRow(alicePage, 'bob', true, 'status: busy', 'alice\'s page shows the list');
    check(!(await alicePage.locator('#invisible').isChecked()), 'the "appear invisible" switch starts off');
    await alicePage.locator('#invisible').check();
    await expectOn(page, 'alice appears invisible: her row leaves bob\'s page', () =>
      page.locator('li[data-user="alice"]').waitFor({ state: 'detached', timeout }));
    await waitForCount(page, '2 of 5 online', 'the count without alice');
    await waitForOrder(page, ['bob', 'dave', 'carol', 'erin', 'frank'], 'bob\'s page without alice');
    await waitForRow(alicePage, 'alice', true, /alice \(you\)/, 'alice\'s own page still shows her');
    await alicePage.locator('#invisible').uncheck();
    await waitForRow(page, 'alice', true, `status: ${hostile}`, 'alice visible again: her row is back on bob\'s page, state and all');
    await waitForCount(page, '3 of 6 online', 'the count with alice again');
    await waitForOrder(page, ['alice', 'bob', 'dave', 'carol', 'erin', 'frank'], 'bob\'s page with alice again');
    await aliceContext.close();

    // alice quits the Python example (end of its input): offline, state cleared, moved down.
    await stop(alice);
    const text = await waitForRow(page, 'alice', false, /offline since/, 'alice goes offline: grey dot, "offline since"');
    check(!text.includes('status'), `alice's state is cleared when she goes offline (row: ${JSON.stringify(text)})`);
    await waitForCount(page, '2 of 6 online', 'the count');
    await waitForOrder(page, ['bob', 'dave', 'alice', 'carol', 'erin', 'frank'], 'alice moves to the offline users');

    // The broker restarts: the status line says the connection is lost while it is, then that
    // it is back; the list is live again (bob's status written after the restart shows).
    console.log('BROKER stop');
    await expectOn(page, 'while the broker is down the status line says the connection is lost', () =>
      page.locator('#status[data-state="offline"], #status[data-state="connecting"]', { hasText: 'Connection lost at' }).waitFor({ timeout }));
    console.log('BROKER start');
    await expectOn(page, 'after the restart the status line says "Connected as bob." again', () =>
      page.locator('#status[data-state="connected"]', { hasText: /^Connected as bob\.$/ }).waitFor({ timeout: 2 * timeout }));
    await page.fill('#mystatus', 'back again');
    await page.click('#mine button');
    await waitForRow(page, 'bob', true, 'status: back again', 'the list is live after the restart (bob\'s new status)');
    check(await page.locator('#status').innerText() === 'Connected as bob.',
      `the status line is in step: "${await page.locator('#status').innerText()}"`);

    // "since" against the page's clock: carol's moment, then 1, 3 and 400 days later.
    const carolSince = Number(await page.locator('li[data-user="carol"]').getAttribute('data-since'));
    const p = utcParts(carolSince);
    await pageTime(page, carolSince, 'carol');
    let s = await since(page, 'carol');
    check(/^offline since \d{1,2}:\d{2}:\d{2} [AP]M$/.test(s.text), `today: the time alone: "${s.text}"`);
    check(s.title.includes(String(p.year)) && s.title.includes(p.date.split(' ')[0]), `the exact moment in the title: "${s.title}"`);
    await pageTime(page, carolSince + day, 'carol');
    s = await since(page, 'carol');
    check(s.text === `offline since ${p.date}, ${p.time} (yesterday)`, `yesterday: date, time and "yesterday": "${s.text}"`);
    await pageTime(page, carolSince + 3 * day, 'carol');
    s = await since(page, 'carol');
    check(s.text === `offline since ${p.date}, ${p.time} (3 days ago)`, `3 days later: date, time and "3 days ago": "${s.text}"`);
    await pageTime(page, carolSince + 400 * day, 'carol');
    s = await since(page, 'carol');
    check(s.text === `offline since ${p.date}, ${p.year}, ${p.time} (400 days ago)`, `another year: with the year: "${s.text}"`);
  } finally {
    for (const child of clients) if (child.exitCode === null) child.kill('SIGKILL');
    await browser.close();
  }
}

main().then(() => {
  console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
  process.exit(failures ? 1 : 0);
}, (err) => {
  console.log(`FAIL: ${err.stack || err}`);
  process.exit(1);
});
