// Small live graphs (canvas sparklines) of a stream's reception, fed by the
// /events "state" snapshots: bitrate (from the tracks' byte counters), jitter
// (the worst track's RFC 3550 §6.4.1 interarrival jitter), loss (packets lost
// over packets expected since the previous snapshot) and the A/V offset.

const POINTS = 90; // 90 snapshots: a minute and a half at the default 1 s interval

/** One metric's recent values drawn as a line on a <canvas>, with its last value. */
export class Sparkline {
  constructor(canvas, label, unit, digits = 0) {
    this.canvas = canvas;
    this.label = label;
    this.unit = unit;
    this.digits = digits;
    this.values = [];
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > POINTS) this.values.shift();
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    ctx.clearRect(0, 0, width, height);
    const known = this.values.filter((v) => v !== null && Number.isFinite(v));
    const last = this.values.length ? this.values[this.values.length - 1] : null;
    const text = last === null || !Number.isFinite(last) ? "-" : last.toFixed(this.digits);
    ctx.fillStyle = "#555";
    ctx.font = "11px sans-serif";
    ctx.fillText(`${this.label} ${text} ${this.unit}`, 4, 12);
    canvas.dataset.last = text;
    if (known.length < 2) return;
    let low = Math.min(0, ...known);
    let high = Math.max(...known);
    if (high === low) high = low + 1;
    const top = 16;
    const step = width / (POINTS - 1);
    const x0 = width - step * (this.values.length - 1);
    ctx.strokeStyle = "#1565c0";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false;
    this.values.forEach((value, i) => {
      if (value === null || !Number.isFinite(value)) {
        pen = false;
        return;
      }
      const x = x0 + i * step;
      const y = top + (height - top - 2) * (1 - (value - low) / (high - low));
      if (pen) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      pen = true;
    });
    ctx.stroke();
  }
}

function sum(tracks, key) {
  return tracks.reduce((total, track) => total + (track[key] || 0), 0);
}

/** The four graphs of one stream, in a <div> it builds; `update(stream, timeMs)` per snapshot. */
export class StreamGraphs {
  constructor(name) {
    this.element = document.createElement("div");
    this.element.className = "stream-graphs";
    this.element.dataset.stream = name;
    const title = document.createElement("h3");
    title.textContent = name;
    this.element.append(title);
    const make = (metric, label, unit, digits) => {
      const canvas = document.createElement("canvas");
      canvas.width = 220;
      canvas.height = 60;
      canvas.className = `graph graph-${metric}`;
      canvas.dataset.metric = metric;
      this.element.append(canvas);
      return new Sparkline(canvas, label, unit, digits);
    };
    this.bitrate = make("bitrate", "bitrate", "kbit/s", 0);
    this.jitter = make("jitter", "jitter", "ms", 1);
    this.loss = make("loss", "loss", "%", 1);
    this.offset = make("av-offset", "A/V offset", "ms", 0);
    this.previous = null;
  }

  update(stream, timeMs) {
    const tracks = stream.tracks || [];
    const now = {
      time: timeMs,
      bytes: sum(tracks, "bytes"),
      received: sum(tracks, "packetsReceived"),
      lost: sum(tracks, "packetsLost"),
    };
    const before = this.previous;
    this.previous = now;
    if (before && now.time > before.time && now.bytes >= before.bytes) {
      this.bitrate.push(((now.bytes - before.bytes) * 8) / (now.time - before.time));
      const expected = now.received - before.received + (now.lost - before.lost);
      this.loss.push(expected > 0 ? (100 * Math.max(0, now.lost - before.lost)) / expected : 0);
    } else {
      this.bitrate.push(null);
      this.loss.push(null);
    }
    this.jitter.push(tracks.length ? Math.max(...tracks.map((t) => t.jitterMs || 0)) : null);
    this.offset.push(stream.avOffsetMs ?? null);
  }
}
