// Study page. It only knows "first" and "second": which score is whose stays on the server.
"use strict";

const $ = (id) => document.getElementById(id);
let session = null;
let state = null;
let busy = false;

function show(section) {
  for (const id of ["start", "trial", "done"]) $(id).hidden = id !== section;
}

function render(view) {
  state = view;
  $("who").textContent = view.tester ? `Tester: ${view.tester}` : "";
  const pct = view.total ? (100 * view.answered) / view.total : 0;
  $("progress-bar").style.width = `${pct}%`;
  $("progress").setAttribute("aria-valuenow", String(view.answered));
  $("progress").setAttribute("aria-valuemax", String(view.total));
  if (view.done) {
    $("done-text").textContent = `You answered all ${view.total} images. You can close this page.`;
    show("done");
    return;
  }
  $("count").textContent = `Image ${view.answered + 1} of ${view.total}`;
  $("score-first").textContent = view.trial.scores[0];
  $("score-second").textContent = view.trial.scores[1];
  $("image").src = view.trial.image;
  $("error").textContent = "";
  show("trial");
}

async function api(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    cache: "no-store",
  });
  const data = await res.json().catch(() => ({}));
  return { ok: res.ok, status: res.status, data };
}

async function load() {
  const r = await api("GET", `/api/study/${session}/trial`);
  if (!r.ok) {
    show("start");
    $("error").textContent = r.data.detail || r.data.error || "";
    return;
  }
  render(r.data);
}

async function choose(choice) {
  if (busy || !state || state.done) return;
  busy = true;
  document.body.classList.add("busy");
  try {
    const r = await api("POST", `/api/study/${session}/answer`, { trial: state.trial.token, choice });
    if (r.status === 409 && r.data.total !== undefined) {
      render(r.data);  // the page was out of date: show the real current trial
      $("error").textContent = r.data.error;
    } else if (!r.ok) {
      $("error").textContent = r.data.error || r.data.detail || `error ${r.status}`;
    } else {
      render(r.data);
    }
  } catch (err) {
    $("error").textContent = "Connection lost; your answers are saved. Retrying…";
    setTimeout(load, 2000);
  } finally {
    busy = false;
    document.body.classList.remove("busy");
  }
}

const KEYS = {
  "1": "first", ArrowLeft: "first",
  "2": "second", ArrowRight: "second",
  "3": "equivalent", e: "equivalent", E: "equivalent",
  "0": "discard", d: "discard", D: "discard",
};

document.addEventListener("keydown", (ev) => {
  if ($("trial").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const choice = KEYS[ev.key];
  if (choice) {
    ev.preventDefault();
    choose(choice);
  }
});

for (const id of ["btn-first", "btn-second", "btn-equivalent", "btn-discard"]) {
  $(id).addEventListener("click", (ev) => choose(ev.currentTarget.dataset.choice));
}

$("start-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const r = await api("POST", "/api/study/start", { name: $("name").value });
  if (!r.ok) {
    alert(r.data.error || "Please enter a valid name.");
    return;
  }
  window.location.assign(`/t/${r.data.session}`);
});

const match = window.location.pathname.match(/^\/t\/([A-Za-z0-9_-]+)$/);
if (match) {
  session = match[1];
  load();
} else {
  show("start");
}
