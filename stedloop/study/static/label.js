// Labelling page: one score in [0, 1] per image, saved to the labeller's data set.
"use strict";

const $ = (id) => document.getElementById(id);
let who = new URLSearchParams(window.location.search).get("who");
let state = null;
let busy = false;

function setValue(v) {
  const clamped = Math.min(1, Math.max(0, Math.round(v * 100) / 100));
  $("slider").value = String(clamped);
  $("value").textContent = clamped.toFixed(2);
}

function render(s) {
  state = s;
  $("who").textContent = `Labeller: ${s.labeller}`;
  $("progress-bar").style.width = `${(100 * s.labelled) / s.total}%`;
  $("progress").setAttribute("aria-valuenow", String(s.labelled));
  $("progress").setAttribute("aria-valuemax", String(s.total));
  $("count").textContent = `Image ${s.index + 1} of ${s.total} — ${s.labelled} labelled`;
  $("name-of-image").textContent = s.name;
  $("image").src = s.image;
  $("saved").textContent = s.score === null ? "not labelled yet" : `saved: ${s.score.toFixed(2)}`;
  setValue(s.score === null ? Number($("slider").value) : s.score);
  $("dataset").textContent = `Data set: ${s.dataset}`;
  $("error").textContent = "";
  $("start").hidden = true;
  $("work").hidden = false;
}

async function call(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    cache: "no-store",
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || JSON.stringify(data.detail) || `error ${res.status}`);
  return data;
}

let navigation = 0;  // only the latest navigation's answer is shown

async function go(index) {
  if (!state || index < 0 || index >= state.total) return;
  state.index = index;  // quick repeated PageUp presses move on from here
  const mine = ++navigation;
  try {
    const s = await call("GET", `/api/label/item/${index}?who=${encodeURIComponent(who)}`);
    if (mine === navigation) render(s);
  } catch (err) {
    $("error").textContent = err.message;
  }
}

async function save() {
  if (busy || !state) return;
  busy = true;
  try {
    const s = await call("POST", "/api/label/score", {
      who, item: state.index, score: Number($("slider").value),
    });
    if (s.next_unlabelled === null) {
      render(s);
      $("saved").textContent = `saved: ${s.score.toFixed(2)} — all ${s.total} images labelled`;
    } else {
      await go(s.next_unlabelled);
    }
  } catch (err) {
    $("error").textContent = err.message;
  } finally {
    busy = false;
  }
}

$("slider").addEventListener("input", () => setValue(Number($("slider").value)));
$("save").addEventListener("click", save);
$("prev").addEventListener("click", () => go(state.index - 1));
$("next").addEventListener("click", () => go(state.index + 1));

document.addEventListener("keydown", (ev) => {
  if ($("work").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const current = Number($("slider").value);
  let handled = true;
  if (/^[0-9]$/.test(ev.key)) setValue(Number(ev.key) / 10);
  else if (ev.key === "+" || ev.key === "=") setValue(1);
  else if (ev.key === "ArrowLeft") setValue(current - 0.01);
  else if (ev.key === "ArrowRight") setValue(current + 0.01);
  else if (ev.key === "ArrowUp") setValue(current + 0.1);
  else if (ev.key === "ArrowDown") setValue(current - 0.1);
  else if (ev.key === "Enter") save();
  else if (ev.key === "PageUp") go(state.index - 1);
  else if (ev.key === "PageDown") go(state.index + 1);
  else handled = false;
  if (handled) ev.preventDefault();
});

$("start-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const s = await call("POST", "/api/label/start", { name: $("name").value });
    who = s.labeller;
    history.replaceState(null, "", `/?who=${encodeURIComponent(who)}`);
    render(s);
  } catch (err) {
    alert(err.message);
  }
});

if (who) {
  call("POST", "/api/label/start", { name: who }).then(render).catch(() => { $("start").hidden = false; });
} else {
  $("start").hidden = false;
}
