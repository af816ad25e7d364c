// The review page: talks to /v1/review (server/review.py) with the operator key typed into the
// password field; the key is never put in the page address or stored.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const items = $("items");
  const player = $("player");
  const state = (window.reviewState = { rows: 0, saved: 0, played: 0, audioSeconds: 0, lastError: null });
  let ws = null;
  let pendingAudio = null; // {call, utterance} awaiting its binary frame
  let audioUrl = null;

  function status(text, error) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
    if (error) state.lastError = text;
  }

  function cell(tr, cls, text) {
    const td = document.createElement("td");
    td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function render(list) {
    items.textContent = "";
    for (const u of list) {
      const tr = document.createElement("tr");
      tr.className = "utt" + (u.repeat_asked ? " repeat" : "");
      tr.dataset.call = u.call;
      tr.dataset.utterance = u.id;
      tr.dataset.status = u.status;
      tr.dataset.original = u.text;
      cell(tr, "conf", u.confidence.toFixed(2));
      cell(tr, "lang", u.language);
      cell(tr, "id", `${u.call} / ${u.id}`);
      cell(tr, "entry", u.entry || "—");
      cell(tr, "flags", [u.repeat_asked ? "repeat" : "", u.rejected ? "rejected: " + u.rejected : ""].filter(Boolean).join(" "));
      const play = document.createElement("button");
      play.type = "button"; play.className = "play"; play.textContent = "▶";
      play.addEventListener("click", () => send({ type: "audio", call: u.call, utterance: u.id }));
      cell(tr, "").appendChild(play);
      const input = document.createElement("input");
      input.type = "text"; input.className = "text"; input.value = u.reviewed_text ?? u.text; input.lang = u.language;
      cell(tr, "text").appendChild(input);
      const sel = document.createElement("select");
      sel.className = "status";
      for (const [v, label] of [["pending", "not reviewed"], ["confirmed", "correct"], ["corrected", "corrected"],
                                ["not_speech", "not speech"], ["opt_out", "rights reserved (opt-out)"]]) {
        const o = document.createElement("option"); o.value = v; o.textContent = label; sel.appendChild(o);
      }
      sel.value = u.status;
      input.addEventListener("input", () => { if (sel.value === "pending" || sel.value === "confirmed") sel.value = "corrected"; });
      cell(tr, "verdict").appendChild(sel);
      const save = document.createElement("button");
      save.type = "button"; save.className = "save"; save.textContent = "Save";
      save.addEventListener("click", () => {
        let verdict = sel.value === "pending" ? "confirmed" : sel.value;
        const text = input.value.trim();
        if (verdict === "confirmed" && text !== u.text) verdict = "corrected";
        send({ type: "save", call: u.call, utterance: u.id, status: verdict, text: verdict === "corrected" ? text : null });
      });
      cell(tr, "").appendChild(save);
      items.appendChild(tr);
    }
    state.rows = list.length;
    status(`${list.length} utterances`);
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { status("not connected", true); return; }
    if (msg.type === "audio") pendingAudio = { call: msg.call, utterance: msg.utterance };
    ws.send(JSON.stringify(msg));
  }

  function onMessage(ev) {
    if (typeof ev.data !== "string") {
      if (!pendingAudio) return;
      if (audioUrl) URL.revokeObjectURL(audioUrl);
      audioUrl = URL.createObjectURL(new Blob([ev.data], { type: "audio/wav" }));
      player.src = audioUrl;
      player.dataset.utterance = `${pendingAudio.call}/${pendingAudio.utterance}`;
      pendingAudio = null;
      player.play().catch(() => {}); // autoplay may be refused; the controls stay
      return;
    }
    const msg = JSON.parse(ev.data);
    if (msg.type === "utterances") render(msg.items);
    else if (msg.type === "saved") {
      const tr = items.querySelector(`tr[data-call="${msg.item.call}"][data-utterance="${msg.item.id}"]`);
      if (tr) { tr.classList.add("saved"); tr.dataset.status = msg.item.status; tr.querySelector("select.status").value = msg.item.status; }
      state.saved += 1;
      status(`saved ${msg.item.call} / ${msg.item.id}: ${msg.item.status}`);
    } else if (msg.type === "error") status(`${msg.code}: ${msg.message}`, true);
  }

  player.addEventListener("loadedmetadata", () => { state.played += 1; state.audioSeconds = player.duration; });

  $("keyform").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key").value.trim();
    if (!key) { status("type the operator key", true); return; }
    if (ws) ws.close();
    document.body.dataset.state = "connecting";
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}/v1/review?token=${encodeURIComponent(key)}`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { document.body.dataset.state = "ready"; $("reload").disabled = false; send({ type: "list" }); };
    ws.onmessage = onMessage;
    ws.onclose = (ev) => {
      if (document.body.dataset.state !== "ready") status("refused: wrong operator key, or review is closed on this server", true);
      document.body.dataset.state = "closed";
      $("reload").disabled = true;
    };
  });
  $("reload").addEventListener("click", () => send({ type: "list" }));
})();
