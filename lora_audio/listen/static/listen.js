/* lora-audio blind listening test.
 *
 * Reads the trial list from window.LISTEN_TEST (trials.js, written by `lora-audio listen
 * build`). Clips are known only by opaque ids; the key that resolves them is a separate
 * file this page never loads. Works from file:// (no fetch) or any static server.
 *
 * Order: rating trials first, then A/B trials, each block shuffled per rater with a PRNG
 * seeded from (test id, rater id), so a reload shows the same order.
 * Progress is kept in localStorage under "lora-audio-listen/<test id>/<rater id>".
 * Ratings are saved by downloading JSON (format "lora-audio-listen-ratings") or CSV.
 */
(function () {
  "use strict";

  const T = window.LISTEN_TEST;
  const $ = (id) => document.getElementById(id);
  if (!T || !Array.isArray(T.trials)) {
    $("start-msg").textContent = "trials.js is missing or broken: rebuild the test.";
    $("begin").disabled = true;
    return;
  }
  const STORE = "lora-audio-listen/" + T.test_id + "/";
  const byId = new Map(T.trials.map((t) => [t.id, t]));
  const questions = T.questions || [];
  const state = { rater: null, order: [], pos: 0, answers: {}, started: null };

  // ------------------------------------------------------------------ seeded order

  function hash32(text) {
    // FNV-1a, 32 bit
    let h = 0x811c9dc5;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h >>> 0;
  }

  function mulberry32(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function shuffled(items, rnd) {
    const out = items.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  function raterOrder(rater) {
    const rnd = mulberry32(hash32(T.test_id + "|" + rater));
    const rate = T.trials.filter((t) => t.kind === "rate").map((t) => t.id);
    const ab = T.trials.filter((t) => t.kind === "ab").map((t) => t.id);
    return shuffled(rate, rnd).concat(shuffled(ab, rnd));
  }

  // ------------------------------------------------------------------ storage

  function save() {
    if (!state.rater) return;
    const doc = { pos: state.pos, answers: state.answers, started: state.started };
    try {
      localStorage.setItem(STORE + state.rater, JSON.stringify(doc));
      localStorage.setItem(STORE + "last-rater", state.rater);
    } catch (e) {
      $("need").textContent = "Could not keep progress in this browser: download often.";
    }
    updateStatus();
  }

  function restore(rater) {
    try {
      const doc = JSON.parse(localStorage.getItem(STORE + rater) || "null");
      if (doc && typeof doc.answers === "object") return doc;
    } catch (e) {
      /* unreadable: start afresh */
    }
    return null;
  }

  // ------------------------------------------------------------------ answers

  function isComplete(trial, ans) {
    if (!ans) return false;
    if (trial.kind === "ab") return ans.choice === trial.a || ans.choice === trial.b;
    return questions.every((q) => Number.isInteger(ans[q.id]));
  }

  function answeredCount() {
    return state.order.filter((id) => isComplete(byId.get(id), state.answers[id])).length;
  }

  function setAnswer(trial, field, value) {
    const ans = state.answers[trial.id] || { trial: trial.id, kind: trial.kind, played: false };
    if (trial.kind === "rate") ans.clip = trial.clip;
    else {
      ans.a = trial.a;
      ans.b = trial.b;
    }
    ans[field] = value;
    ans.time = new Date().toISOString();
    state.answers[trial.id] = ans;
    save();
    refreshNav();
  }

  function markPlayed(trial, which) {
    const ans = state.answers[trial.id] || { trial: trial.id, kind: trial.kind };
    ans.heard = ans.heard || [];
    if (!ans.heard.includes(which)) ans.heard.push(which);
    ans.played = trial.kind === "ab" ? ans.heard.length >= 2 : true;
    if (trial.kind === "rate") ans.clip = trial.clip;
    else {
      ans.a = trial.a;
      ans.b = trial.b;
    }
    state.answers[trial.id] = ans;
    save();
  }

  function ratingsDoc() {
    const answers = state.order
      .map((id) => state.answers[id])
      .filter((a) => a && isComplete(byId.get(a.trial), a))
      .map((a) => {
        const out = Object.assign({}, a);
        delete out.heard;
        return out;
      });
    return {
      format: "lora-audio-listen-ratings",
      version: 1,
      test_id: T.test_id,
      rater: state.rater,
      started: state.started,
      saved: new Date().toISOString(),
      complete: answers.length === state.order.length,
      user_agent: navigator.userAgent,
      answers: answers,
    };
  }

  const CSV_COLUMNS = ["test_id", "rater", "trial", "kind", "clip"]
    .concat(questions.map((q) => q.id))
    .concat(["a", "b", "choice", "played", "time"]);

  function csvCell(value) {
    const s = value === undefined || value === null ? "" : String(value);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function ratingsCsv() {
    const doc = ratingsDoc();
    const lines = [CSV_COLUMNS.join(",")];
    for (const a of doc.answers) {
      const row = Object.assign({ test_id: doc.test_id, rater: doc.rater }, a);
      lines.push(CSV_COLUMNS.map((c) => csvCell(row[c])).join(","));
    }
    return lines.join("\r\n") + "\r\n";
  }

  function fileStem() {
    const who = (state.rater || "rater").replace(/[^A-Za-z0-9_-]+/g, "_");
    return "ratings_" + T.test_id + "_" + who;
  }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type: type }));
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(url);
      a.remove();
    }, 1000);
  }

  function saveJson() {
    download(fileStem() + ".json", JSON.stringify(ratingsDoc(), null, 1) + "\n", "application/json");
  }

  function saveCsv() {
    download(fileStem() + ".csv", ratingsCsv(), "text/csv");
  }

  // ------------------------------------------------------------------ rendering

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children || []) node.appendChild(c);
    return node;
  }

  function player(label, src, onPlay) {
    const audio = el("audio", { controls: "", preload: "auto", src: src });
    audio.addEventListener("play", onPlay);
    return el("div", { class: "player" }, [el("div", { class: "player-label", text: label }), audio]);
  }

  function choice(name, value, title, subtitle, checked, onPick) {
    const input = el("input", { type: "radio", name: name, value: String(value) });
    input.checked = checked;
    input.addEventListener("change", onPick);
    const span = el("span", {}, [el("b", { text: title })]);
    if (subtitle) span.appendChild(document.createTextNode(subtitle));
    return el("label", { class: "choice", "data-q": name, "data-v": String(value) }, [input, span]);
  }

  function renderReference(show) {
    const box = $("reference");
    box.hidden = !(show && T.references.length);
    const players = $("ref-players");
    if (players.childElementCount || box.hidden) return;
    T.references.forEach((src, i) => {
      const label = T.references.length > 1 ? "Reference " + (i + 1) : "The style to match";
      players.appendChild(player(label, src, () => {}));
    });
  }

  function renderTrial() {
    const trial = byId.get(state.order[state.pos]);
    const ans = state.answers[trial.id] || {};
    const stage = $("stage");
    stage.replaceChildren();
    stage.setAttribute("data-trial", trial.id);
    if (trial.kind === "rate") {
      renderReference(questions.some((q) => q.id === "style"));
      stage.appendChild(el("h2", { text: "Clip" }));
      stage.appendChild(player("Listen to the whole clip", "audio/" + trial.clip + ".wav", () => markPlayed(trial, "clip")));
      for (const q of questions) {
        const scale = el("div", { class: "scale" });
        q.labels.forEach((label, i) => {
          const v = i + 1;
          scale.appendChild(choice(q.id, v, String(v), label, ans[q.id] === v, () => setAnswer(trial, q.id, v)));
        });
        stage.appendChild(el("fieldset", {}, [el("legend", { text: q.text }), scale]));
      }
    } else {
      renderReference(T.references.length > 0);
      stage.appendChild(el("h2", { text: "Compare" }));
      stage.appendChild(player("Clip A", "audio/" + trial.a + ".wav", () => markPlayed(trial, "a")));
      stage.appendChild(player("Clip B", "audio/" + trial.b + ".wav", () => markPlayed(trial, "b")));
      const scale = el("div", { class: "scale two" }, [
        choice("ab", "a", "A", "", ans.choice === trial.a, () => setAnswer(trial, "choice", trial.a)),
        choice("ab", "b", "B", "", ans.choice === trial.b, () => setAnswer(trial, "choice", trial.b)),
      ]);
      stage.appendChild(el("fieldset", {}, [el("legend", { text: T.ab_question }), scale]));
    }
    const n = state.order.length;
    $("counter").textContent = "Trial " + (state.pos + 1) + " of " + n;
    $("bar").style.width = (100 * state.pos) / n + "%";
    refreshNav();
  }

  function refreshNav() {
    const trial = byId.get(state.order[state.pos]);
    const ok = isComplete(trial, state.answers[trial.id]);
    $("prev").disabled = state.pos === 0;
    $("next").disabled = !ok;
    $("next").innerHTML = state.pos === state.order.length - 1 ? "Finish &rarr;" : "Next &rarr;";
    $("need").textContent = ok ? "" : "Answer every question to go on.";
  }

  function updateStatus() {
    $("status").textContent = state.rater
      ? "Rater " + state.rater + " \u00b7 " + answeredCount() + " of " + state.order.length + " answered"
      : "";
  }

  function show(section) {
    for (const id of ["start", "trial", "done"]) $(id).hidden = id !== section;
    window.scrollTo(0, 0);
  }

  function go(pos) {
    for (const a of document.querySelectorAll("audio")) a.pause();
    if (pos >= state.order.length) {
      const n = answeredCount();
      $("done-summary").textContent =
        "You answered " + n + " of " + state.order.length + " trials. Your rater id: " + state.rater + ".";
      state.pos = state.order.length - 1;
      save();
      show("done");
      return;
    }
    state.pos = Math.max(0, pos);
    save();
    show("trial");
    renderTrial();
  }

  function begin() {
    const rater = $("rater").value.trim();
    if (!rater) {
      $("start-msg").textContent = "Enter a rater id first.";
      return;
    }
    state.rater = rater;
    state.order = raterOrder(rater);
    const doc = restore(rater);
    state.answers = doc ? doc.answers : {};
    state.started = (doc && doc.started) || new Date().toISOString();
    const firstOpen = state.order.findIndex((id) => !isComplete(byId.get(id), state.answers[id]));
    $("save-json").disabled = false;
    $("save-csv").disabled = false;
    go(firstOpen === -1 ? state.order.length : firstOpen);
  }

  // ------------------------------------------------------------------ wiring

  document.title = T.title;
  $("title").textContent = T.title;
  $("ref-note").hidden = !T.references.length;
  $("begin").addEventListener("click", begin);
  $("rater").addEventListener("keydown", (e) => {
    if (e.key === "Enter") begin();
  });
  $("prev").addEventListener("click", () => go(state.pos - 1));
  $("next").addEventListener("click", () => go(state.pos + 1));
  $("review").addEventListener("click", () => go(0));
  for (const id of ["save-json", "done-json"]) $(id).addEventListener("click", saveJson);
  for (const id of ["save-csv", "done-csv"]) $(id).addEventListener("click", saveCsv);
  try {
    $("rater").value = localStorage.getItem(STORE + "last-rater") || "";
  } catch (e) {
    /* storage disabled: nothing to restore */
  }
})();
