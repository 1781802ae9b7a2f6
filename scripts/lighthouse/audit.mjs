// Lighthouse and axe-core against the real pages of a running app (scripts/check-pages starts
// it). Usage: node audit.mjs http://127.0.0.1:PORT
//
// Lighthouse: the voting page and the results page, desktop and mobile, the four categories;
// every score is printed, and the run fails when one is below MIN_SCORE (the audits that cost
// points are listed). axe-core: the same pages at 1280x800 and 390x844, light and dark, and
// the voting page after a vote; any violation fails the run. Chromium is CHROME_PATH (Debian's
// /usr/bin/chromium by default); nothing is fetched from the network.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as chromeLauncher from 'chrome-launcher';
import lighthouse from 'lighthouse';
import desktopConfig from 'lighthouse/core/config/desktop-config.js';
import puppeteer from 'puppeteer-core';

const MIN_SCORE = 95;
const CATEGORIES = ['performance', 'accessibility', 'best-practices', 'seo'];
const CHROME_PATH = process.env.CHROME_PATH || '/usr/bin/chromium';
const CHROME_FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--no-first-run', '--disable-background-networking', '--disable-component-update'];

const base = process.argv[2];
if (!base) {
  console.error('usage: node audit.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const pages = [['vote', `${base}/vote/`], ['result', `${base}/result/`]];
const failures = [];

async function runLighthouse() {
  console.log(`Lighthouse (minimum ${MIN_SCORE} in every category)`);
  console.log('page    form     performance  accessibility  best-practices  seo');
  for (const [name, url] of pages) {
    for (const form of ['desktop', 'mobile']) {
      const chrome = await chromeLauncher.launch({ chromePath: CHROME_PATH, chromeFlags: CHROME_FLAGS });
      let lhr;
      try {
        const flags = { port: chrome.port, output: 'json', logLevel: 'error', onlyCategories: CATEGORIES };
        const result = await lighthouse(url, flags, form === 'desktop' ? desktopConfig : undefined);
        lhr = result.lhr;
      } finally {
        await chrome.kill();
      }
      if (lhr.runtimeError) {
        failures.push(`Lighthouse ${name} ${form}: ${lhr.runtimeError.code} ${lhr.runtimeError.message}`);
        continue;
      }
      const scores = CATEGORIES.map((c) => Math.round((lhr.categories[c].score ?? 0) * 100));
      console.log(`${name.padEnd(8)}${form.padEnd(9)}${scores.map((s, i) => String(s).padEnd([13, 15, 16, 4][i])).join('')}`);
      CATEGORIES.forEach((c, i) => {
        if (scores[i] >= 100) {
          return;
        }
        const lost = lhr.categories[c].auditRefs
          .filter((ref) => ref.weight > 0 && lhr.audits[ref.id].score !== null && lhr.audits[ref.id].score < 1)
          .map((ref) => `${ref.id} (${lhr.audits[ref.id].displayValue || lhr.audits[ref.id].score})`);
        console.log(`        ${c} ${scores[i]}: ${lost.join(', ') || 'no single audit'}`);
        if (scores[i] < MIN_SCORE) {
          failures.push(`Lighthouse ${name} ${form}: ${c} ${scores[i]} < ${MIN_SCORE}`);
        }
      });
    }
  }
}

async function runAxe() {
  const require = createRequire(import.meta.url);
  const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  const browser = await puppeteer.launch({ executablePath: CHROME_PATH, args: CHROME_FLAGS.slice(1), headless: true });
  console.log(`axe-core ${JSON.parse(readFileSync(require.resolve('axe-core/package.json'), 'utf8')).version}`);
  try {
    for (const [width, height] of [[1280, 800], [390, 844]]) {
      for (const scheme of ['light', 'dark']) {
        const steps = [...pages, ['vote after a vote', `${base}/vote/`]];
        for (const [name, url] of steps) {
          const page = await browser.newPage();
          await page.setViewport({ width, height });
          await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: scheme }]);
          await page.goto(url, { waitUntil: 'load' });
          if (name === 'result') {
            await page.waitForSelector('#connection[data-state="live"]', { timeout: 30000 });
          }
          if (name === 'vote after a vote') {
            await Promise.all([page.waitForNavigation(), page.click('#option-a')]);
            await page.waitForSelector('#status');
          }
          // Evaluated through the DevTools protocol: the pages' CSP does not apply to it.
          await page.evaluate(axeSource);
          const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
          const what = `${name} ${width}x${height} ${scheme}`;
          if (result.violations.length === 0) {
            console.log(`  ${what}: no violations (${result.passes.length} rules passed)`);
          }
          for (const v of result.violations) {
            const where = v.nodes.map((n) => n.target.join(' ')).join('; ');
            console.log(`  ${what}: ${v.id} (${v.impact}): ${v.help}: ${where}`);
            failures.push(`axe ${what}: ${v.id}`);
          }
          await page.close();
        }
      }
    }
  } finally {
    await browser.close();
  }
}

await runLighthouse();
await runAxe();
if (failures.length > 0) {
  console.error(`\n${failures.length} failure(s):\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
console.log('\nLighthouse and axe-core: every page passes');
