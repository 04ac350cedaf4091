// A small line chart on a <canvas>: no library, nothing fetched. Series are
// { name, color, points: [[t_ms, value], ...] }; the x axis is the last `windowMs`.

export function drawLines(canvas, series, { windowMs = 300_000, unit = '', min = 0 } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400;
  const h = canvas.clientHeight || 160;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = Date.now();
  const x0 = now - windowMs;
  let max = unit === '%' ? min + 1 : min + 1e-9;
  for (const s of series) for (const [t, v] of s.points) if (t >= x0 && v > max) max = v;
  max *= 1.1;
  const left = 56;
  const bottom = h - 18;
  g.strokeStyle = '#3a4654';
  g.fillStyle = '#9aa7b4';
  g.font = '11px sans-serif';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = bottom - ((bottom - 8) * i) / 4;
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(w - 4, y);
    g.stroke();
    g.fillText(fmt(min + ((max - min) * i) / 4, unit), 2, y + 4);
  }
  const X = (t) => left + ((w - 4 - left) * (t - x0)) / windowMs;
  const Y = (v) => bottom - ((bottom - 8) * (v - min)) / (max - min);
  series.forEach((s) => {
    const pts = s.points.filter(([t]) => t >= x0);
    if (pts.length === 0) return;
    g.strokeStyle = s.color;
    g.lineWidth = 2;
    g.beginPath();
    pts.forEach(([t, v], i) => (i ? g.lineTo(X(t), Y(v)) : g.moveTo(X(t), Y(v))));
    g.stroke();
  });
  let lx = left;
  series.forEach((s) => {
    g.fillStyle = s.color;
    g.fillRect(lx, h - 12, 10, 8);
    g.fillStyle = '#c8d2dc';
    g.fillText(s.name, lx + 14, h - 4);
    lx += 24 + g.measureText(s.name).width;
  });
}

function fmt(v, unit) {
  if (unit === 'bps') {
    if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
    if (v >= 1e3) return `${Math.round(v / 1e3)}k`;
    return `${Math.round(v)}`;
  }
  if (unit === '%') return `${v.toFixed(1)}%`;
  return v >= 100 ? `${Math.round(v)}` : v.toFixed(1);
}
