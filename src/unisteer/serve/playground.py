"""The playground page the server shows at ``/``: a prompt, a slider for ``m`` per loaded delta,
the unsteered and the steered answers streaming side by side, and each delta's fitted
preference and utility curves (arXiv 2602.02343, Eqs. 4–5) with the current ``m`` marked, so
a person sees where on the trade-off they are. One self-contained page (no files, no CDN);
it talks to the same ``/v1`` API as any client."""

from __future__ import annotations

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>unisteer playground</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem;
         padding: 0 1rem; color: #1d1d1f; }
  h1 { font-size: 1.3rem; margin: 0 0 .8rem; }
  textarea { width: 100%; min-height: 5rem; font: inherit; box-sizing: border-box; }
  .row { display: flex; gap: 1rem; flex-wrap: wrap; align-items: center; margin: .6rem 0; }
  .answers { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  .answer { border: 1px solid #ccc; border-radius: 6px; padding: .6rem .8rem; min-height: 8rem;
            white-space: pre-wrap; background: #fafafa; }
  .answer h2 { font-size: .95rem; margin: 0 0 .4rem; color: #555; }
  .delta { border: 1px solid #ddd; border-radius: 6px; padding: .5rem .8rem; margin: .5rem 0; }
  .delta label { font-weight: 600; }
  .delta input[type=range] { width: 18rem; vertical-align: middle; }
  svg { background: #fff; border: 1px solid #eee; }
  #status { color: #666; min-height: 1.2rem; }
  .error { color: #b00020; }
</style>
</head>
<body>
<h1>unisteer playground</h1>
<div class="row">
  <span id="model">loading…</span>
  <label>API key <input id="key" type="password" size="18" autocomplete="off"></label>
  <label>max tokens <input id="max-tokens" type="number" min="1" max="1024" value="64"></label>
</div>
<textarea id="prompt">Tell me about your weekend plans.</textarea>
<div id="deltas"></div>
<div class="row"><button id="go">Generate</button> <span id="status"></span></div>
<div class="answers">
  <div class="answer"><h2>unsteered</h2><div id="base"></div></div>
  <div class="answer"><h2 id="steered-title">steered</h2><div id="steered"></div></div>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const sliders = [];

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function say(text, bad) {
  $("status").textContent = text;
  $("status").className = bad ? "error" : "";
}

function plot(delta, m) {
  const c = delta.curves;
  if (!c) return null;
  const W = 340, H = 160, P = 30;
  const ms = c.m, ys = c.preference.concat(c.utility).filter((v) => v !== null);
  const x0 = ms[0], x1 = ms[ms.length - 1];
  const y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => P + (W - 2 * P) * (x - x0) / ((x1 - x0) || 1);
  const sy = (y) => H - P - (H - 2 * P) * (y - y0) / ((y1 - y0) || 1);
  const line = (vals, colour) => {
    const pts = ms.map((x, i) => vals[i] === null ? null : sx(x) + "," + sy(vals[i]))
      .filter((p) => p !== null).join(" ");
    return '<polyline fill="none" stroke="' + colour + '" stroke-width="2" points="' + pts + '"/>';
  };
  const mx = Math.max(x0, Math.min(x1, m));
  return '<svg width="' + W + '" height="' + H + '" role="img" aria-label="fitted curves">' +
    line(c.preference, "#1f77b4") + line(c.utility, "#d62728") +
    '<line class="marker" x1="' + sx(mx) + '" x2="' + sx(mx) + '" y1="' + P / 2 + '" y2="' +
    (H - P / 2) + '" stroke="#333" stroke-dasharray="4 3"/>' +
    '<text x="' + P + '" y="14" font-size="11" fill="#1f77b4">PrefOdds</text>' +
    '<text x="' + (P + 70) + '" y="14" font-size="11" fill="#d62728">UtilOdds</text>' +
    '<text x="' + (W - P) + '" y="' + (H - 6) + '" font-size="11" text-anchor="end">m = ' +
    m.toFixed(2) + '</text>' +
    '<text x="' + P + '" y="' + (H - 6) + '" font-size="10" fill="#777">' + x0.toFixed(1) +
    '</text>' +
    '<text x="2" y="' + (sy(y1) + 4) + '" font-size="10" fill="#777">' + y1.toFixed(1) +
    '</text><text x="2" y="' + (sy(y0) + 4) + '" font-size="10" fill="#777">' +
    y0.toFixed(1) + '</text></svg>';
}

function addDelta(delta) {
  const chosen = delta.chosen_m !== null && delta.chosen_m !== undefined ? delta.chosen_m : null;
  const ends = (delta.grid && delta.grid.length ? delta.grid : [-8, 8]).slice();
  if (delta.curves) ends.push(delta.curves.m[0], delta.curves.m[delta.curves.m.length - 1]);
  if (chosen !== null) ends.push(chosen);
  const lo = Math.min(...ends), hi = Math.max(...ends);
  const start = chosen !== null ? chosen : 0;
  const box = document.createElement("div");
  box.className = "delta";
  const id = "m-" + delta.name;
  box.innerHTML = '<label for="' + id + '">' + delta.name + '</label> <small>' +
    delta.kind + (delta.objective ? " · " + delta.objective : "") + " · layer " +
    delta.layers.join(",") + (delta.chosen_m !== null && delta.chosen_m !== undefined ?
    " · chosen m " + delta.chosen_m.toFixed(2) : "") + '</small><br>' +
    '<input type="range" id="' + id + '" min="' + lo + '" max="' + hi +
    '" step="any" value="' + start + '"> <output>' + start.toFixed(2) +
    '</output><div class="plot"></div>';
  $("deltas").appendChild(box);
  const input = box.querySelector("input"), out = box.querySelector("output");
  const draw = () => {
    const m = parseFloat(input.value);
    out.textContent = m.toFixed(2);
    const svg = plot(delta, m);
    box.querySelector(".plot").innerHTML = svg || "<small>no fitted curves for this delta</small>";
  };
  input.addEventListener("input", draw);
  draw();
  sliders.push({name: delta.name, input: input});
}

async function stream(body, target) {
  target.textContent = "";
  const res = await fetch("/v1/chat/completions", {method: "POST", headers: headers(),
                                                   body: JSON.stringify(body)});
  if (!res.ok) {
    const err = await res.json().catch(() => ({error: {message: res.statusText}}));
    throw new Error(err.error.message);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!line.startsWith("data: ")) continue;
      const data = line.slice(6);
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      const piece = chunk.choices.length ? chunk.choices[0].delta.content : null;
      if (piece) target.textContent += piece;
    }
  }
}

async function go() {
  const steering = sliders.map((s) => ({delta: s.name, m: parseFloat(s.input.value)}))
    .filter((s) => s.m !== 0);
  const common = {messages: [{role: "user", content: $("prompt").value}], stream: true,
                  max_tokens: parseInt($("max-tokens").value, 10) || 64, temperature: 0};
  $("steered-title").textContent = steering.length ? "steered: " +
    steering.map((s) => s.delta + " m=" + s.m.toFixed(2)).join(", ") : "steered (all m = 0)";
  $("go").disabled = true;
  say("generating…");
  document.body.dataset.state = "running";
  try {
    await Promise.all([stream(common, $("base")),
                       stream(Object.assign({steering: steering}, common), $("steered"))]);
    say("done");
    document.body.dataset.state = "done";
  } catch (e) {
    say(e.message, true);
    document.body.dataset.state = "failed";
  } finally {
    $("go").disabled = false;
  }
}

async function init() {
  try {
    const res = await fetch("/v1/models", {headers: headers()});
    const models = await res.json();
    if (!res.ok) throw new Error(models.error.message);
    $("model").textContent = "model: " + models.data[0].id;
    models.deltas.forEach(addDelta);
    if (!models.deltas.length) $("deltas").textContent = "no deltas loaded (unsteered only)";
    document.body.dataset.ready = "yes";
  } catch (e) {
    say("could not read /v1/models: " + e.message + " (an API key?)", true);
  }
}

$("go").addEventListener("click", go);
$("key").addEventListener("change", () => { if (!sliders.length) init(); });
init();
</script>
</body>
</html>
"""
