/* Dauys web demo client. Speaks protocol v1 (see PROTOCOL.md) over /v1/voice.
 * Classic script, no dependencies. Test hooks: body[data-state], window.dauysStats.
 * Served as /web/app.js; the capture worklet is loaded relative to this script's URL.
 * The API key is typed into a password field and passed as ?token= on the WebSocket URL only
 * (browsers cannot set Authorization there); a ?token= in the page's own address is removed
 * from the address bar at once and never used. */
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(location.search);
  // A key in the page address would live on in the history, bookmarks, shared links and Referer headers.
  var keyInAddress = params.has('token');
  if (keyInAddress) {
    params.delete('token');
    var rest = params.toString();
    try { history.replaceState(history.state, '', location.pathname + (rest ? '?' + rest : '') + location.hash); } catch (e) { /* ignore */ }
  }
  var KEY_STORE = 'dauys.apiKey';
  var SCRIPT_URL = (document.currentScript && document.currentScript.src) || location.href;
  var OUT_RATE = 16000;
  var stats = window.dauysStats = { framesSent: 0, audioFramesReceived: 0, audioPlayedSeconds: 0, events: [] };

  var ui = {
    lang: $('lang'), connect: $('connect'), stop: $('stop'), status: $('status'), level: $('level'),
    hearing: $('hearing'), speaker: $('speaker'), unmute: $('unmute'), log: $('log'), scroller: $('scroller'),
    form: $('say'), text: $('text'), send: $('send'), disclosure: $('disclosure-text'),
    keyform: $('keyform'), key: $('key'), remember: $('remember')
  };

  var ws = null, ending = false, endTimer = 0, hearTimer = 0;
  var ctx = null, workletReady = null, mic = null;
  var utter = new Map(), replies = new Map(), typed = [];
  var cur = null;                 // current reply audio: {reply_id, encoding, sample_rate, muted, carry}
  var sources = new Set(), nextT = 0;

  var CLOSE_TEXT = { 1000: 'normal', 1001: 'going away', 1006: 'abnormal: server unreachable or handshake refused',
    1008: 'policy (auth / origin)', 1009: 'frame too large', 1011: 'server fault', 1013: 'try again later (at capacity)' };
  var STATUS = {
    idle: 'Ажыратылған / Disconnected', connecting: 'Қосылуда… / Connecting…', ready: 'Дайын / Ready',
    listening: 'Тыңдап тұр / Listening', closed: 'Ажыратылған / Disconnected'
  };

  // ---------- UI helpers ----------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }
  function validLang(l) { return typeof l === 'string' && /^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$/.test(l); }
  function badge() { var b = el('span', 'ai-badge', 'AI'); b.title = 'AI-generated / ЖИ жасаған'; return b; }
  function tag(t) { return el('span', 'tag', t); }
  function append(node) {
    var s = ui.scroller, stick = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
    ui.log.appendChild(node);
    if (stick) s.scrollTop = s.scrollHeight;
    return node;
  }
  function sysLine(text, ai) {
    var d = el('div', 'sys');
    if (ai) { d.appendChild(badge()); d.appendChild(document.createTextNode(' ')); }
    d.appendChild(document.createTextNode(text));
    return append(d);
  }
  function clientError(code, msg) {
    var d = el('div', 'client-error');
    d.appendChild(el('code', null, code));
    d.appendChild(document.createTextNode(' — ' + msg));
    append(d);
  }
  function setState(state, status) {
    document.body.dataset.state = state;
    ui.status.textContent = STATUS[status || state] || status;
    var open = !!ws && ws.readyState === WebSocket.OPEN;
    ui.connect.disabled = !!ws;
    ui.stop.disabled = !ws;
    ui.stop.textContent = ending ? 'Жабу / Close' : 'Тоқтату / Stop';
    ui.text.disabled = ui.send.disabled = !(open && state === 'ready' && !ending);
    ui.lang.disabled = ui.key.disabled = !!ws;
    updUnmute();
  }
  function showHearing(on) {
    clearTimeout(hearTimer);
    ui.hearing.hidden = !on;
    if (on) hearTimer = setTimeout(function () { ui.hearing.hidden = true; }, 10000);
  }
  function updSpeaker() {
    ui.speaker.hidden = sources.size === 0;
    document.body.dataset.speaking = sources.size ? 'on' : 'off';
  }

  // ---------- audio context ----------
  function ensureAudio() {
    if (!ctx) {
      var AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) { clientError('no_web_audio', 'Web Audio is not available in this browser'); return null; }
      try { ctx = new AC({ latencyHint: 'interactive' }); } catch (e) { clientError('audio_context', String(e)); return null; }
      ctx.onstatechange = updUnmute;
    }
    if (ctx.state === 'suspended') ctx.resume().then(updUnmute, function () {});
    setTimeout(updUnmute, 300);
    return ctx;
  }
  function updUnmute() { ui.unmute.hidden = !ctx || ctx.state !== 'suspended' || !ws; }
  function unlockAudio() { if (ctx && ctx.state === 'suspended') ctx.resume().then(updUnmute, function () {}); }

  // ---------- microphone ----------
  function ensureWorklet() {
    if (!ctx.audioWorklet) return Promise.reject(new Error('AudioWorklet unavailable (needs a secure context: HTTPS or localhost)'));
    if (!workletReady) {
      workletReady = ctx.audioWorklet.addModule(new URL('capture-worklet.js', SCRIPT_URL).href);
      workletReady.catch(function () { workletReady = null; });
    }
    return workletReady;
  }

  function startMic() {
    if (mic || !ws || !ensureAudio()) return;
    var sock = ws;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      clientError('no_microphone', 'Microphone API unavailable (needs HTTPS or localhost). Typed input still works.');
      return;
    }
    var stream = null;
    ensureWorklet().then(function () {
      return navigator.mediaDevices.getUserMedia({ audio: {
        echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 } });
    }).then(function (s) {
      stream = s;
      if (ws !== sock || ending || mic) { stopTracks(stream); return; }
      var source = ctx.createMediaStreamSource(stream);
      var node = new AudioWorkletNode(ctx, 'dauys-capture', {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        channelCount: 1, channelCountMode: 'explicit', channelInterpretation: 'speakers',
        processorOptions: { outRate: OUT_RATE, chunkMs: 20 }
      });
      node.port.onmessage = onPcm;
      source.connect(node);
      node.connect(ctx.destination); // outputs silence; keeps the graph pulling in every browser
      mic = { stream: stream, source: source, node: node };
      stream.getAudioTracks().forEach(function (t) {
        t.addEventListener('ended', function () {
          if (mic && mic.stream === stream) { stopMic(); sysLine('Микрофон ажыратылды / Microphone disconnected'); }
        });
      });
      unlockAudio();
      document.body.dataset.mic = 'on';
      if (ws === sock && !ending) setState('ready', 'listening');
    }).catch(function (e) {
      if (stream) stopTracks(stream);
      clientError('microphone_error', (e && e.name ? e.name + ': ' : '') + (e && e.message || e) + ' — typed input still works.');
    });
  }
  function stopTracks(s) { try { s.getTracks().forEach(function (t) { t.stop(); }); } catch (e) { /* ignore */ } }
  function stopMic() {
    if (!mic) return;
    var m = mic; mic = null;
    try { m.node.port.postMessage('stop'); m.node.port.onmessage = null; } catch (e) { /* ignore */ }
    try { m.source.disconnect(); m.node.disconnect(); } catch (e) { /* ignore */ }
    stopTracks(m.stream);
    document.body.dataset.mic = 'off';
    ui.level.style.width = '0';
    if (ws && document.body.dataset.state === 'ready') setState('ready');
  }
  function onPcm(e) {
    var d = e.data;
    if (!d || d.type !== 'pcm') return;
    var db = 20 * Math.log10((d.rms || 0) + 1e-9);
    ui.level.style.width = Math.max(0, Math.min(100, (db + 60) / 60 * 100)).toFixed(0) + '%';
    if (mic && ws && ws.readyState === WebSocket.OPEN && !ending) {
      try { ws.send(d.pcm); stats.framesSent++; } catch (err) { /* closing */ }
    }
  }

  // ---------- playback ----------
  var ULAW = new Float32Array(256);
  (function () {
    for (var i = 0; i < 256; i++) {
      var u = ~i & 0xff, t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
      ULAW[i] = ((u & 0x80) ? 0x84 - t : t - 0x84) / 32768;
    }
  })();

  function decode(buf, a) {
    var bytes = new Uint8Array(buf), f, i;
    if (a.encoding === 'mulaw') {
      f = new Float32Array(bytes.length);
      for (i = 0; i < bytes.length; i++) f[i] = ULAW[bytes[i]];
      return f;
    }
    if (a.carry != null) {
      var m = new Uint8Array(bytes.length + 1); m[0] = a.carry; m.set(bytes, 1); bytes = m; a.carry = null;
    }
    var n = bytes.length >> 1;
    if (bytes.length & 1) a.carry = bytes[bytes.length - 1];
    var dv = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
    f = new Float32Array(n);
    for (i = 0; i < n; i++) f[i] = dv.getInt16(i * 2, true) / 32768;
    return f;
  }

  function playChunk(buf) {
    if (!cur || cur.muted || !ctx) return;
    var f = decode(buf, cur);
    if (ctx.state !== 'running') { updUnmute(); return; } // autoplay blocked: drop rather than queue stale audio
    if (!f.length) return;
    var ab = ctx.createBuffer(1, f.length, cur.sample_rate);
    ab.getChannelData(0).set(f);
    var src = ctx.createBufferSource();
    src.buffer = ab;
    src.connect(ctx.destination);
    var now = ctx.currentTime;
    if (nextT < now + 0.01) nextT = now + (sources.size ? 0.02 : 0.06); // small jitter buffer on (re)start
    src.start(nextT);
    src.t0 = nextT; src.dur = ab.duration;
    nextT += ab.duration;
    sources.add(src);
    src.onended = function () {
      if (!sources.delete(src)) return;
      stats.audioPlayedSeconds += src.dur;
      updSpeaker();
    };
    updSpeaker();
  }

  function stopPlayback() {
    var now = ctx ? ctx.currentTime : 0;
    sources.forEach(function (src) {
      stats.audioPlayedSeconds += Math.max(0, Math.min(src.dur, now - src.t0));
      src.onended = null;
      try { src.stop(); src.disconnect(); } catch (e) { /* ignore */ }
    });
    sources.clear();
    nextT = 0;
    updSpeaker();
  }

  function bargeIn() {
    if (cur) cur.muted = true;
    if (sources.size) stopPlayback();
  }

  // ---------- events ----------
  function onTranscript(ev) {
    var id = ev.utterance_id != null ? String(ev.utterance_id) : null;
    var d = id != null ? utter.get(id) : null;
    if (d && d.classList.contains('final-transcript')) return; // late partial
    if (!d && ev.final) d = claimTyped(ev.text);
    if (!d) d = append(el('div', 'msg user'));
    if (id != null) utter.set(id, d);
    d.replaceChildren();
    if (validLang(ev.language)) d.lang = ev.language;
    if (ev.final) {
      d.className = 'msg user final-transcript';
      d.removeAttribute('aria-hidden');
      var meta = el('div', 'meta');
      if (ev.language) meta.appendChild(tag(ev.language));
      if (typeof ev.confidence === 'number') meta.appendChild(el('span', 'conf', Math.round(ev.confidence * 100) + '%'));
      d.appendChild(meta);
      d.appendChild(el('div', 'text', ev.text || ''));
      showHearing(false);
    } else {
      d.className = 'msg user partial-transcript';
      d.setAttribute('aria-hidden', 'true');
      d.textContent = ev.text || '…';
    }
  }
  function claimTyped(text) {
    var t = String(text || '').trim();
    for (var i = 0; i < typed.length; i++) {
      if (typed[i].text === t) { var d = typed[i].node; typed.splice(i, 1); return d; }
    }
    return null;
  }

  function onReply(ev) {
    var d = el('div', 'msg bot reply');
    if (validLang(ev.language)) d.lang = ev.language;
    if (ev.reply_id != null) { d.dataset.replyId = ev.reply_id; replies.set(String(ev.reply_id), d); }
    var meta = el('div', 'meta');
    meta.appendChild(badge());
    if (ev.language) meta.appendChild(tag(ev.language));
    d.appendChild(meta);
    d.appendChild(el('div', 'text', ev.text || ''));
    var p = ev.provenance;
    if (p) {
      var models = p.models;
      if (models && typeof models === 'object') models = Array.isArray(models) ? models.join(', ') : JSON.stringify(models);
      d.title = 'AI-generated · ' + [p.system, models, p.created].filter(Boolean).join(' · ');
    }
    append(d);
  }

  function onAudioStart(ev) {
    var sr = Number(ev.sample_rate) || OUT_RATE;
    var enc = ev.encoding || 'pcm_s16le';
    cur = { reply_id: ev.reply_id, encoding: enc, sample_rate: sr, muted: false, carry: null };
    if (enc !== 'pcm_s16le' && enc !== 'mulaw') { cur.muted = true; clientError('unsupported_audio', 'Cannot play ' + enc); }
    if (sr < 8000 || sr > 96000) { cur.muted = true; clientError('unsupported_audio', 'Sample rate ' + sr); }
    var b = ev.reply_id != null ? replies.get(String(ev.reply_id)) : null;
    if (b) {
      var m = b.querySelector('.meta');
      if (m && !m.querySelector('.spk')) {
        var s = el('span', 'spk', '♪'); s.title = 'AI speech' + (ev.watermark ? ' · watermark ' + ev.watermark : '');
        m.appendChild(s);
      }
    } else {
      sysLine('♪ ЖИ дауысы / AI voice' + (ev.reply_id != null ? ' · ' + ev.reply_id : ''), ev.ai_generated !== false);
    }
  }

  function onAudioEnd(ev) {
    if (cur && (ev.reply_id == null || String(cur.reply_id) === String(ev.reply_id))) cur = null;
    if (ev.interrupted) {
      stopPlayback();
      var b = ev.reply_id != null ? replies.get(String(ev.reply_id)) : null;
      if (b) { var m = b.querySelector('.meta'); if (m) m.appendChild(el('span', null, '■ үзілді / interrupted')); }
    }
  }

  function onHandoff(ev) {
    var d = el('div', 'handoff');
    if (validLang(ev.language)) d.lang = ev.language;
    d.appendChild(el('strong', null, '☎ Операторға қосылуда / Transferring you to a human operator'));
    d.appendChild(el('div', null, 'Себебі / Reason: ' + (ev.reason || '—')));
    if (ev.summary) d.appendChild(el('div', 'summary', ev.summary));
    if (ev.ai_generated) d.insertBefore(badge(), d.firstChild);
    append(d);
  }

  function onServerError(ev) {
    var d = el('div', 'error-event');
    d.appendChild(el('code', null, ev.code || 'error'));
    d.appendChild(document.createTextNode(' — ' + (ev.message || '')));
    append(d);
  }

  function handleEvent(ev) {
    switch (ev.type) {
      case 'ready':
        if (ev.disclosure && ev.disclosure.text) {
          ui.disclosure.textContent = ev.disclosure.text;
          if (validLang(ev.disclosure.language)) ui.disclosure.lang = ev.disclosure.language;
        }
        sysLine('Сессия / Session ' + (ev.session_id || '') +
          (Array.isArray(ev.languages) ? ' · ' + ev.languages.join(', ') : ''), !!ev.ai_generated);
        if (ev.disclosure && ev.disclosure.text) {
          var dd = sysLine(ev.disclosure.text, true);
          if (validLang(ev.disclosure.language)) dd.lang = ev.disclosure.language;
        }
        setState('ready');
        startMic();
        break;
      case 'speech_started': bargeIn(); showHearing(true); break;
      case 'transcript': onTranscript(ev); break;
      case 'reply': onReply(ev); break;
      case 'audio_start': onAudioStart(ev); break;
      case 'audio_end': onAudioEnd(ev); break;
      case 'handoff': onHandoff(ev); break;
      case 'error': onServerError(ev); break;
      case 'session_end':
        sysLine('Сессия аяқталды / Session ended' + (ev.reason ? ': ' + ev.reason : ''));
        stopMic();
        break;
      default:
        if (ev.ai_generated) sysLine(ev.text || ev.type, true);
    }
  }

  function onMessage(data) {
    if (typeof data === 'string') {
      var ev;
      try { ev = JSON.parse(data); } catch (e) { clientError('bad_json', 'Server sent non-JSON text'); return; }
      if (!ev || typeof ev !== 'object') return;
      stats.events.push(ev);
      handleEvent(ev);
    } else {
      stats.audioFramesReceived++;
      playChunk(data);
    }
  }

  // ---------- the API key (typed; kept in sessionStorage only if asked) ----------
  function apiKey() {
    var key = ui.key.value.trim();
    rememberKey();
    return key;
  }
  function rememberKey() {
    try {
      var key = ui.key.value.trim();
      if (ui.remember.checked && key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage disabled */ }
  }

  // ---------- connection ----------
  function connect() {
    if (ws) return;
    ensureAudio();
    if (ctx) ensureWorklet().catch(function () { /* reported when the mic starts */ });
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/voice';
    var token = apiKey();
    if (token) url += '?token=' + encodeURIComponent(token);
    utter.clear(); replies.clear(); typed = []; cur = null; ending = false;
    var sock;
    try { sock = new WebSocket(url); } catch (e) {
      clientError('connect_failed', String(e && e.message || e));
      setState('closed');
      return;
    }
    sock.binaryType = 'arraybuffer';
    ws = sock;
    setState('connecting');
    sysLine('Қосылуда / Connecting…');
    var lang = ui.lang.value || 'auto';
    sock.onopen = function () {
      if (ws !== sock) return;
      try {
        sock.send(JSON.stringify({ type: 'start',
          audio: { encoding: 'pcm_s16le', sample_rate: OUT_RATE, channels: 1 },
          output: { encoding: 'pcm_s16le', sample_rate: OUT_RATE },
          language: lang }));
      } catch (e) { clientError('send_failed', String(e)); }
    };
    sock.onmessage = function (e) {
      if (ws !== sock) return;
      try { onMessage(e.data); } catch (err) { clientError('client_bug', String(err && err.message || err)); }
    };
    sock.onerror = function () { /* a close event always follows; reported there */ };
    sock.onclose = function (e) {
      if (ws !== sock) return;
      clearTimeout(endTimer);
      ws = null; ending = false; cur = null;
      stopMic();
      showHearing(false);
      var why = CLOSE_TEXT[e.code] || '';
      sysLine('Байланыс жабылды / Connection closed · code ' + e.code + (why ? ' (' + why + ')' : '') +
        (e.reason ? ' · ' + e.reason : ''));
      setState('closed');
      ui.status.textContent = STATUS.closed + ' (' + e.code + ')';
    };
  }

  function stop() {
    if (!ws) return;
    if (ending || ws.readyState !== WebSocket.OPEN) { try { ws.close(1000, 'client closed'); } catch (e) { /* ignore */ } return; }
    stopMic();
    ending = true;
    try { ws.send(JSON.stringify({ type: 'end' })); } catch (e) { /* ignore */ }
    sysLine('Аяқталуда / Ending…');
    var sock = ws;
    endTimer = setTimeout(function () { if (ws === sock) try { sock.close(1000, 'end timeout'); } catch (e) { /* ignore */ } }, 15000);
    setState(document.body.dataset.state);
  }

  function sendText(ev) {
    ev.preventDefault();
    var text = ui.text.value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN || ending) return;
    try { ws.send(JSON.stringify({ type: 'text', text: text })); } catch (e) { clientError('send_failed', String(e)); return; }
    var d = el('div', 'msg user typed-text');
    var meta = el('div', 'meta'); meta.appendChild(el('span', null, 'мәтін / typed'));
    d.appendChild(meta); d.appendChild(el('div', 'text', text));
    append(d);
    typed.push({ text: text, node: d });
    if (typed.length > 20) typed.shift();
    ui.text.value = '';
    unlockAudio();
  }

  // ---------- wiring ----------
  function safe(fn) {
    return function (e) { try { return fn(e); } catch (err) { clientError('client_bug', String(err && err.message || err)); } };
  }
  ui.connect.addEventListener('click', safe(connect));
  ui.stop.addEventListener('click', safe(stop));
  ui.form.addEventListener('submit', safe(sendText));
  ui.keyform.addEventListener('submit', safe(function (e) { e.preventDefault(); connect(); }));
  ui.remember.addEventListener('change', safe(rememberKey));
  ui.unmute.addEventListener('click', safe(unlockAudio));
  var atBottom = true;
  ui.scroller.addEventListener('scroll', function () {
    var s = ui.scroller; atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }, { passive: true });
  if (window.ResizeObserver) new ResizeObserver(function () { if (atBottom) ui.scroller.scrollTop = ui.scroller.scrollHeight; }).observe(ui.scroller);
  document.addEventListener('pointerdown', unlockAudio, true);
  document.addEventListener('keydown', unlockAudio, true);
  window.addEventListener('pagehide', function () { stopMic(); if (ws) try { ws.close(1001); } catch (e) { /* ignore */ } });

  var lp = params.get('lang');
  if (lp && ui.lang.querySelector('option[value="' + (validLang(lp) || lp === 'auto' ? lp : 'x') + '"]')) ui.lang.value = lp;
  try {
    var kept = sessionStorage.getItem(KEY_STORE);
    if (kept) { ui.key.value = kept; ui.remember.checked = true; }
  } catch (e) { /* storage disabled */ }
  setState('idle');
  if (keyInAddress) sysLine('Адрестегі кілт алынып тасталды, қолданылмады: оны API кілті өрісіне енгізіңіз. / ' +
    'The key in the page address was removed from it and not used: type it into the API key field.');
  if (params.get('autostart') === '1') safe(connect)();
})();
