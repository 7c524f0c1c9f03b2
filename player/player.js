// World player: draws streamed JPEG frames on a canvas and captures every input on the page.
// Runs once per player as Gradio's js_on_load (element, trigger, props, watch are provided).
// The server receives the *full* control state (held keys, sticks, cumulative look totals,
// last drawn frame) on every edge, at <= 30 Hz while something moves, and every 250 ms as a
// heartbeat, so a lost or reordered message heals by itself and never leaves a key stuck.
const root = element.querySelector('.wm-root');
const canvas = root.querySelector('.wm-canvas');
const ctx = canvas.getContext('2d');
const $ = (sel) => root.querySelector(sel);
const KEYMAP = props.keymap;          // KeyboardEvent.code -> bit
const NAMES = props.key_names;        // bit order, for the overlay
const BIT = {};
NAMES.forEach((n, i) => { BIT[n] = 1 << i; });
const SEND_MS = 33, RESEND_MS = 250, ACK_MS = 100;
const REWIND_S = 3;                       // the Rewind button and Backspace go back this far
const bar = element.querySelector('.wm-bar');
const timeline = bar.querySelector('.wm-timeline');

const wm = {frames: 0, drawn: 0, sent: 0, fps: 0, lat: 0, latSamples: [], lastN: -1, armed: false,
            keys: 0, msg: '', locked: false, back: 0, split: false, psnr: null, smooth: true, rewinds: 0};
window.__wm = wm;

let kbKeys = 0, padKeys = 0;
let move = {x: 0, y: 0}, look = {x: 0, y: 0}, pad = {mx: 0, my: 0, sx: 0, sy: 0};
let lookX = 0, lookY = 0;                 // cumulative pointer movement since load
let seq = 0, lastSend = 0, lastSentSig = "0,0,0,0,0,0,0", ackSent = -1, lastFrameAt = -Infinity;
const pendingEdges = new Map();           // seq -> send time, for input-to-frame latency
const drawTimes = [];

function composed() {
  const keys = kbKeys | padKeys;
  const mx = clamp(move.x + pad.mx), my = clamp(move.y + pad.my);
  const sx = clamp(look.x + pad.sx), sy = clamp(look.y + pad.sy);
  return {keys, mx, my, sx, sy};
}
function clamp(v) { return Math.max(-1, Math.min(1, v)); }
function playing() { return performance.now() - lastFrameAt < 1500; }

function send(edge) {
  const c = composed();
  const sig = [c.keys, c.mx, c.my, c.sx, c.sy, lookX, lookY].join(',');
  const changed = sig !== lastSentSig;
  lastSentSig = sig;
  seq += 1;
  const now = performance.now();
  if ((changed || edge) && playing()) pendingEdges.set(seq, now);   // latency is only meaningful mid-stream
  for (const [s, t] of pendingEdges) { if (now - t < 2000 && pendingEdges.size <= 64) break; pendingEdges.delete(s); }
  lastSend = now;
  ackSent = wm.lastN;
  wm.sent += 1;
  wm.keys = c.keys;
  trigger('control', {seq, keys: c.keys, mx: c.mx, my: c.my, lx: lookX, ly: lookY, sx: c.sx, sy: c.sy,
                      ack: wm.lastN, vis: !document.hidden, fps: Math.round(wm.fps * 10) / 10,
                      lat: Math.round(wm.lat)});
  renderHud();
}

// ---- frames ---------------------------------------------------------------------------------
let busy = false, pending = null, seenN = -1, frameSize = '';
watch('value', () => {
  const v = props.value;
  if (!v || (v.img && v.n <= seenN)) return;   // watch may fire twice for one value under load
  if (v.msg !== undefined) showMessage(v.msg);
  if (v.hud) $('.wm-server').textContent = v.hud;
  if (v.img) { seenN = v.n; wm.frames += 1; pending = v; if (!busy) drawNext(); }
  if (v.back !== undefined) showBack(v.back);
  if (v.img) {
    wm.split = !!v.split; wm.psnr = v.split ? v.psnr : null;
    bar.classList.toggle('wm-split', wm.split); root.classList.toggle('wm-split', wm.split);
  }
});

// ---- rewind: the button, Backspace and the timeline of the kept history ----------------------
let scrubbing = false;
function showBack(seconds) {
  wm.back = seconds;
  timeline.disabled = seconds <= 0;
  if (scrubbing) return;                    // the player is choosing a point: leave the thumb alone
  timeline.min = String(-Math.max(seconds, 0.1));
  timeline.value = '0';
  bar.querySelector('.wm-when').textContent = seconds > 0 ? 'now' : '';
}
function rewind(seconds) {
  if (!(seconds > 0)) return;
  wm.rewinds += 1;
  trigger('rewind', {seconds: Math.round(seconds * 100) / 100});
}
timeline.addEventListener('pointerdown', () => { scrubbing = true; });
timeline.addEventListener('input', () => {
  scrubbing = true;
  const s = -Number(timeline.value);
  bar.querySelector('.wm-when').textContent = s > 0.04 ? '\u2212' + s.toFixed(1) + ' s' : 'now';
});
timeline.addEventListener('change', () => {
  scrubbing = false;
  const s = -Number(timeline.value);
  timeline.value = '0';
  bar.querySelector('.wm-when').textContent = 'now';
  if (s > 0.04) rewind(s);
});
bar.querySelector('.wm-rewind').addEventListener('click', () => rewind(REWIND_S));
bar.querySelector('.wm-resync').addEventListener('click', () => trigger('resync', {}));

// ---- upscaling: smooth (default) or crisp pixels; the choice is remembered ----------------------
let lastImg = null;
function setSmooth(on) {
  wm.smooth = on;
  root.classList.toggle('wm-pixelated', !on);
  const button = bar.querySelector('.wm-smooth');
  button.textContent = on ? 'Smooth' : 'Pixels';
  button.setAttribute('aria-pressed', String(on));
  try { localStorage.setItem('wm-smooth', on ? '1' : '0'); } catch (e) { /* private mode */ }
  if (lastImg) paint(lastImg);
}
function paint(img) {
  ctx.imageSmoothingEnabled = wm.smooth;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
}
bar.querySelector('.wm-smooth').addEventListener('click', () => setSmooth(!wm.smooth));
let storedSmooth = null;
try { storedSmooth = localStorage.getItem('wm-smooth'); } catch (e) { /* private mode */ }
setSmooth(storedSmooth !== '0');

async function drawNext() {
  busy = true;
  while (pending) {
    const v = pending; pending = null;    // only the newest waiting frame is ever drawn
    const img = new Image();
    img.src = v.img;
    try { await img.decode(); } catch (e) { continue; }
    const scale = Math.max(1, Math.ceil(512 / Math.max(v.w, v.h)));   // small frames: draw upscaled
    if (frameSize !== v.w + 'x' + v.h) {
      frameSize = v.w + 'x' + v.h;
      canvas.width = v.w * scale; canvas.height = v.h * scale;
      root.style.aspectRatio = v.w + ' / ' + v.h;
    }
    lastImg = img;
    paint(img);
    const now = performance.now();
    lastFrameAt = now;
    wm.drawn += 1;
    wm.lastN = v.n;
    drawTimes.push(now);
    while (drawTimes.length && now - drawTimes[0] > 1000) drawTimes.shift();
    wm.fps = drawTimes.length > 1 ? (drawTimes.length - 1) * 1000 / (now - drawTimes[0]) : 0;
    for (const [s, t] of pendingEdges) {
      if (s > v.seq) break;
      wm.latSamples.push(now - t);
      pendingEdges.delete(s);
    }
    if (wm.latSamples.length > 30) wm.latSamples.splice(0, wm.latSamples.length - 30);
    const sorted = [...wm.latSamples].sort((a, b) => a - b);
    wm.lat = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
    root.classList.add('wm-live');
  }
  busy = false;
}

function showMessage(text) {
  wm.msg = text || '';
  $('.wm-msg').textContent = wm.msg;
  root.classList.toggle('wm-has-msg', !!wm.msg);
}

// ---- arming, keyboard -----------------------------------------------------------------------
function arm() {
  if (wm.armed) return;
  wm.armed = true;
  root.classList.add('wm-armed');
  renderHud();
}
function disarm() {
  wm.armed = false;
  root.classList.remove('wm-armed');
  if (document.pointerLockElement === canvas) document.exitPointerLock();
  releaseAll();
}
function releaseAll() {
  const had = kbKeys || move.x || move.y || look.x || look.y;
  kbKeys = 0; move = {x: 0, y: 0}; look = {x: 0, y: 0};
  moveId = lookId = dragId = null;
  placeKnob($('.wm-move .wm-knob'), 0, 0);
  $('.wm-look-knob').style.display = 'none';
  if (had) send(true);
}
function typing(target) {
  return !!(target && target.closest &&
            target.closest('input, textarea, select, [contenteditable=""], [contenteditable="true"]'));
}
function onKey(e, down) {
  if (e.isComposing || typing(e.target)) return;
  if (down && e.code === 'Escape') { if (wm.armed) disarm(); return; }
  if (e.code === 'Backspace') {             // rewind, once per press (held: no auto-repeat)
    if (down && wm.drawn > 0) { e.preventDefault(); if (!e.repeat) rewind(REWIND_S); }
    return;
  }
  const bit = KEYMAP[e.code];
  if (bit === undefined) return;
  if (down && !wm.armed) return;
  if (wm.armed) e.preventDefault();           // no page scrolling on space/arrows while playing
  if (down && e.repeat) return;
  const before = kbKeys;
  kbKeys = down ? (kbKeys | bit) : (kbKeys & ~bit);
  if (kbKeys !== before) send(true);
}
const listeners = [
  [window, 'keydown', (e) => onKey(e, true)],
  [window, 'keyup', (e) => onKey(e, false)],
  [window, 'blur', () => releaseAll()],
  [document, 'visibilitychange', () => { if (document.hidden) releaseAll(); send(true); }],
  [document, 'pointerdown', (e) => { if (wm.armed && !element.contains(e.target)) disarm(); }],
  [document, 'pointerlockchange', () => {
    const locked = document.pointerLockElement === canvas;
    if (wm.locked && !locked) disarm();         // Esc leaves pointer lock: stop playing too
    wm.locked = locked;
    root.classList.toggle('wm-locked', locked);
  }],
  [document, 'mousemove', (e) => {
    if (document.pointerLockElement !== canvas) return;
    lookX += e.movementX; lookY += e.movementY; dirty = true;
  }],
];
listeners.forEach(([t, name, fn]) => t.addEventListener(name, fn));

// ---- pointer: move stick (bottom left), look area (everything else) ----------------------------
let moveId = null, lookId = null, dragId = null, dirty = false;
let lookOrigin = {x: 0, y: 0};
const stickBase = $('.wm-move');
function stickRadius() { return stickBase.getBoundingClientRect().width / 2; }
function placeKnob(knob, x, y) {
  knob.style.transform = 'translate(' + (x * 100) + '%, ' + (y * 100) + '%)';
}
function vector(e, cx, cy) {
  const r = stickRadius();
  let x = (e.clientX - cx) / r, y = (e.clientY - cy) / r;
  const m = Math.hypot(x, y);
  if (m > 1) { x /= m; y /= m; }
  return {x, y};
}
function stickCentre() {
  const b = stickBase.getBoundingClientRect();
  return {x: b.left + b.width / 2, y: b.top + b.height / 2};
}
root.addEventListener('contextmenu', (e) => e.preventDefault());
root.addEventListener('pointerdown', (e) => {
  if (e.target.closest('.wm-ui')) return;
  arm();
  const onStick = stickBase.contains(e.target);
  const rect = root.getBoundingClientRect();
  const touchLeft = e.pointerType !== 'mouse' && e.clientX < rect.left + rect.width * 0.45;
  if ((onStick || touchLeft) && moveId === null) {
    moveId = e.pointerId;
    root.setPointerCapture(e.pointerId);
    const c = stickCentre();
    move = vector(e, c.x, c.y);
    placeKnob($('.wm-move .wm-knob'), move.x, move.y);
    send(true);
  } else if (e.pointerType !== 'mouse' && lookId === null) {
    lookId = e.pointerId;                       // touch look stick: rate = offset from touch point
    root.setPointerCapture(e.pointerId);
    lookOrigin = {x: e.clientX, y: e.clientY};
    const k = $('.wm-look-knob');
    k.style.left = (e.clientX - rect.left) + 'px'; k.style.top = (e.clientY - rect.top) + 'px';
    k.style.display = 'block';
    placeKnob(k.firstElementChild, 0, 0);
  } else if (e.pointerType === 'mouse') {
    if (props.pointer_lock && document.pointerLockElement !== canvas && canvas.requestPointerLock) {
      try {
        const p = canvas.requestPointerLock();
        if (p && p.catch) p.catch(() => {});
      } catch (err) { /* drag-to-look below still works */ }
    }
    dragId = e.pointerId;
    root.setPointerCapture(e.pointerId);
  }
  e.preventDefault();
});
root.addEventListener('pointermove', (e) => {
  if (e.pointerId === moveId) {
    const c = stickCentre();
    move = vector(e, c.x, c.y);
    placeKnob($('.wm-move .wm-knob'), move.x, move.y);
    dirty = true;
  } else if (e.pointerId === lookId) {
    look = vector(e, lookOrigin.x, lookOrigin.y);
    placeKnob($('.wm-look-knob').firstElementChild, look.x, look.y);
    dirty = true;
  } else if (e.pointerId === dragId && document.pointerLockElement !== canvas) {
    lookX += e.movementX; lookY += e.movementY; dirty = true;
  }
});
function endPointer(e) {
  if (e.pointerId === moveId) {
    moveId = null; move = {x: 0, y: 0};
    placeKnob($('.wm-move .wm-knob'), 0, 0);
    send(true);
  } else if (e.pointerId === lookId) {
    lookId = null; look = {x: 0, y: 0};
    $('.wm-look-knob').style.display = 'none';
    send(true);
  } else if (e.pointerId === dragId) {
    dragId = null;
  }
}
root.addEventListener('pointerup', endPointer);
root.addEventListener('pointercancel', endPointer);

// ---- gamepad ----------------------------------------------------------------------------------
const PAD_BUTTONS = [[0, 'space'], [1, 'ctrl'], [2, 'e'], [4, 'shift'], [10, 'shift'],
                     [12, 'w'], [13, 's'], [14, 'a'], [15, 'd']];
function dead(v) { return Math.abs(v) < 0.15 ? 0 : v; }
function pollPad() {
  const pads = navigator.getGamepads ? Array.from(navigator.getGamepads()).filter((g) => g) : [];
  const g = pads[0];
  if (!g) { if (padKeys || pad.mx || pad.my || pad.sx || pad.sy) { padKeys = 0; pad = {mx: 0, my: 0, sx: 0, sy: 0}; send(true); } return; }
  let keys = 0;
  for (const [i, name] of PAD_BUTTONS) if (g.buttons[i] && g.buttons[i].pressed) keys |= BIT[name];
  const next = {mx: dead(g.axes[0] || 0), my: dead(g.axes[1] || 0), sx: dead(g.axes[2] || 0), sy: dead(g.axes[3] || 0)};
  const moved = next.mx !== pad.mx || next.my !== pad.my || next.sx !== pad.sx || next.sy !== pad.sy;
  pad = next;
  if (keys !== padKeys) { padKeys = keys; send(true); } else if (moved) { dirty = true; }
}

// ---- send loop and overlay --------------------------------------------------------------------
const timer = setInterval(() => {
  if (!element.isConnected) { clearInterval(timer); listeners.forEach(([t, n, f]) => t.removeEventListener(n, f)); return; }
  pollPad();
  renderHud();
  const now = performance.now();
  const c = composed();
  const active = c.keys || c.mx || c.my || c.sx || c.sy;
  if (dirty && now - lastSend >= SEND_MS) { dirty = false; send(false); }
  else if (active && now - lastSend >= RESEND_MS) send(false);
  else if (playing() && wm.lastN !== ackSent && now - lastSend >= ACK_MS) send(false);
  else if (playing() && now - lastSend >= 1000) send(false);
}, SEND_MS);

const capsBox = $('.wm-caps');
const CAPS = [['w', 'W'], ['a', 'A'], ['s', 'S'], ['d', 'D'], ['space', 'Space'], ['shift', 'Shift'],
              ['ctrl', 'Ctrl'], ['e', 'E'], ['left', '\u2190'], ['up', '\u2191'], ['down', '\u2193'], ['right', '\u2192']];
capsBox.innerHTML = CAPS.map(([n, label]) => '<span class="wm-cap" data-k="' + n + '">' + label + '</span>').join('');
let hudAt = 0;
function renderHud() {
  const keys = composed().keys;
  capsBox.querySelectorAll('.wm-cap').forEach((el) => el.classList.toggle('on', !!(keys & BIT[el.dataset.k])));
  const now = performance.now();
  if (now - hudAt < 200) return;
  hudAt = now;
  $('.wm-fps').textContent = playing() ? wm.fps.toFixed(0) + ' fps' : '';
  $('.wm-lat').textContent = playing() && wm.lat ? Math.round(wm.lat) + ' ms' : '';
  root.classList.toggle('wm-live', playing());
}
showMessage(props.message || '');
window.__wmShow = showMessage;   // lets the Start button say "waiting in line" before the queue answers
