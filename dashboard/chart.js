/* Portico's dashboard: line charts drawn by hand on a canvas (no library). */

/** A CSS variable's value (the charts follow the light or dark scheme). */
function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#888';
}

/** A round top for an axis of four intervals: four times a round step (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^n). */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const quarter = value / 4;
  const exp = Math.pow(10, Math.floor(Math.log10(quarter)));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (quarter <= m * exp) return 4 * m * exp;
  return 40 * exp;
}

/**
 * Draws `lines` (each `{ key, colour (a CSS variable), fill? }`) of `points` (`{ t, [key]: number|null }`) over the
 * last `historyS` seconds on `canvas`, with a grid, a y axis labelled by `unit(value)` and minutes on the x axis.
 */
export function drawChart(canvas, points, lines, unit, historyS) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0) return;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 56, right: 10, top: 8, bottom: 22 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const now = Date.now();
  const from = now - historyS * 1000;
  let max = 0;
  for (const p of points) for (const line of lines) if (p.t >= from && typeof p[line.key] === 'number') max = Math.max(max, p[line.key]);
  const top = niceMax(max * 1.1);
  const x = (t) => pad.left + ((t - from) / (historyS * 1000)) * plotW;
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  ctx.font = `11px ${cssVar('--sans')}`;
  ctx.lineWidth = 1;
  ctx.strokeStyle = cssVar('--grid');
  ctx.fillStyle = cssVar('--muted');
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  for (let i = 0; i <= 4; i++) {
    const v = (top / 4) * i;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(width - pad.right, yy);
    ctx.stroke();
    ctx.fillText(unit(v), pad.left - 6, yy);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let m = 0; m <= historyS / 60; m++) {
    const t = now - m * 60000;
    const xx = Math.round(x(t)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(xx, pad.top);
    ctx.lineTo(xx, pad.top + plotH);
    ctx.stroke();
    ctx.fillText(m === 0 ? 'now' : `−${m} min`, Math.min(Math.max(xx, pad.left + 14), width - pad.right - 14), pad.top + plotH + 6);
  }

  for (const line of lines) {
    ctx.strokeStyle = cssVar(line.colour);
    ctx.lineWidth = 1.75;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    let drawing = false;
    for (const p of points) {
      const v = p[line.key];
      if (p.t < from || typeof v !== 'number' || !Number.isFinite(v)) {
        drawing = false;
        continue;
      }
      if (drawing) ctx.lineTo(x(p.t), y(v));
      else ctx.moveTo(x(p.t), y(v));
      drawing = true;
    }
    ctx.stroke();
    if (line.fill) {
      // A light area under the requests line.
      ctx.globalAlpha = 0.12;
      ctx.fillStyle = cssVar(line.colour);
      const visible = points.filter((p) => p.t >= from && typeof p[line.key] === 'number');
      if (visible.length > 1) {
        ctx.beginPath();
        ctx.moveTo(x(visible[0].t), y(0));
        for (const p of visible) ctx.lineTo(x(p.t), y(p[line.key]));
        ctx.lineTo(x(visible[visible.length - 1].t), y(0));
        ctx.closePath();
        ctx.fill();
      }
      ctx.globalAlpha = 1;
    }
  }
}
