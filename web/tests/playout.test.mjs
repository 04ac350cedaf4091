// Unit tests of the classroom page's link-sized video jitter buffer (js/playout.js): pure, no
// browser, driven by one-second samples on a virtual clock.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  playoutState, nextPlayout, targetForRtt, HOLD_MS, MAX_TARGET_MS, MIN_TARGET_MS, DEFAULT_RTT_MS, MARGIN_MS,
} from '../js/playout.js';

/** Feeds samples one second apart from t = 0; returns the target after each. */
function run(samples, state = playoutState()) {
  const out = [];
  let s = state;
  samples.forEach((x, i) => {
    s = nextPlayout(s, { now: i * 1000, ...x });
    out.push(s.target);
  });
  return { out, state: s };
}

test('a clean link keeps the browser default', () => {
  const { out } = run(Array.from({ length: 30 }, () => ({ loss: 0, rttMs: 100 })));
  assert.ok(out.every((t) => t === null), JSON.stringify(out));
});

test('loss asks for a buffer covering two repairs, bounded', () => {
  assert.equal(MARGIN_MS, 200);
  assert.equal(targetForRtt(100), 400);
  assert.equal(targetForRtt(10), 2 * 10 + MARGIN_MS);
  assert.ok(MIN_TARGET_MS <= 2 * 10 + MARGIN_MS);
  assert.equal(targetForRtt(700), MAX_TARGET_MS); // satellite: capped
  assert.equal(targetForRtt(null), 2 * DEFAULT_RTT_MS + MARGIN_MS);
  const { out } = run([{ loss: 0, rttMs: 100 }, { loss: 0.02, rttMs: 100 }, { loss: 0, rttMs: 100 }]);
  assert.deepEqual(out, [null, 400, 400]);
});

test('the buffer stays through quiet seconds and goes after the hold', () => {
  const quiet = Math.ceil(HOLD_MS / 1000) + 2;
  const { out } = run([{ loss: 0.03, rttMs: 120 }, ...Array.from({ length: quiet }, () => ({ loss: 0, rttMs: 120 }))]);
  assert.equal(out[0], 440);
  assert.equal(out[Math.floor(HOLD_MS / 1000)], 440, 'held for the whole minute');
  assert.equal(out[out.length - 1], null, 'released after the hold');
});

test('round-trip noise does not move the playout point; a real change does', () => {
  const rtts = [100, 110, 95, 120, 105, 250, 220, 100];
  const { out } = run(rtts.map((rttMs) => ({ loss: 0.02, rttMs })));
  assert.deepEqual(out, [400, 400, 400, 440, 440, 700, 700, 400]);
});

test('an unknown round trip keeps the last one measured', () => {
  const { out } = run([{ loss: 0.02, rttMs: 100 }, { loss: 0.02, rttMs: null }, { loss: 0.02 }]);
  assert.deepEqual(out, [400, 400, 400]);
});

test('loss below the threshold is not a lossy link', () => {
  const { out } = run([{ loss: 0.001, rttMs: 100 }, { loss: NaN, rttMs: 100 }]);
  assert.deepEqual(out, [null, null]);
});
