/*! chat-widget.js: a guest live chat for any page, one file, no dependencies.
 * <script src="https://chat.example.com/static/chat/chat-widget.js"
 *         data-api="https://chat.example.com" defer></script>
 * Optional: data-title="Chat with us". Text is only ever inserted as text. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.chatWidgetLoaded) return;
  window.chatWidgetLoaded = true;

  var API = (script.getAttribute("data-api") || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  var TITLE = script.getAttribute("data-title") || "Chat with us";
  var BASE = API + "/api/v1/chat/guest/";
  var STORE = "chat-widget:" + API; // one conversation per API origin
  var WAIT = 25; // long-poll seconds
  var KEY_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

  var key = null; // the guest session's key: its only credential
  var cursor = 0; // the largest id received (never moved by a send's answer: that could skip a reply)
  var seen = {}; // integer ids already shown
  var pending = {}; // client id -> the bubble of a message not yet confirmed
  var gen = 0; // bumped when a session ends: stale loops stop
  var source = null; // the EventSource
  var streamAgainAt = 0; // after a stream failure, long-poll until then
  var creating = null; // the session being created
  var queue = Promise.resolve(); // sends, one at a time, in order
  var unread = 0;

  function store(value) {
    try {
      if (value) localStorage.setItem(STORE, value);
      else localStorage.removeItem(STORE);
    } catch (e) {} // storage off (private mode): the chat lasts as long as the page
  }
  try {
    key = localStorage.getItem(STORE);
  } catch (e) {}
  if (key && !KEY_RE.test(key)) key = null;

  // ---- the DOM, in a shadow root so the host page's CSS and ours never meet ----
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    for (var name in attrs) node.setAttribute(name, attrs[name]);
    if (text) node.textContent = text;
    return node;
  }
  var host = el("div", { "data-chat-widget": "" });
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  var style = el("style");
  style.textContent =
    ":host{all:initial}" +
    ".cw{position:fixed;right:20px;bottom:20px;z-index:2147483000;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328}" +
    ".cw *{box-sizing:border-box;font:inherit}" +
    ".cw button{cursor:pointer}" +
    ".cw :focus-visible{outline:3px solid #f5a300;outline-offset:2px}" +
    ".cw-launch{position:relative;border:0;border-radius:28px;padding:14px 22px;background:#2457d6;color:#fff;font-weight:600;box-shadow:0 4px 14px rgba(0,0,0,.25)}" +
    ".cw-badge{position:absolute;top:-6px;right:-6px;min-width:22px;padding:1px 6px;border-radius:11px;background:#d1242f;color:#fff;font-size:12px;text-align:center}" +
    ".cw-panel{position:absolute;right:0;bottom:64px;width:350px;max-width:calc(100vw - 40px);height:480px;max-height:calc(100vh - 100px);display:flex;flex-direction:column;background:#fff;border:1px solid #d0d7de;border-radius:12px;box-shadow:0 10px 32px rgba(0,0,0,.22);overflow:hidden}" +
    ".cw [hidden]{display:none}" +
    ".cw-head{display:flex;align-items:center;justify-content:space-between;padding:10px 14px;background:#2457d6;color:#fff}" +
    ".cw-head h2{margin:0;font-size:16px;font-weight:600}" +
    ".cw-close{border:0;background:transparent;color:#fff;font-size:22px;line-height:1;padding:2px 8px;border-radius:6px}" +
    ".cw-log{flex:1;overflow-y:auto;margin:0;padding:12px;list-style:none;display:flex;flex-direction:column;gap:6px;background:#f6f8fa}" +
    ".cw-msg{max-width:82%;padding:7px 11px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere}" +
    ".cw-user{align-self:flex-end;background:#2457d6;color:#fff;border-bottom-right-radius:4px}" +
    ".cw-assistant,.cw-system{align-self:flex-start;background:#fff;border:1px solid #d0d7de;border-bottom-left-radius:4px}" +
    ".cw-pending{opacity:.65}" +
    ".cw-failed{background:#fff;color:#d1242f;border:1px solid #d1242f}" +
    ".cw-empty{align-self:center;color:#57606a;font-size:14px}" +
    ".cw-status{margin:0;padding:4px 12px;font-size:13px;color:#57606a;background:#fff8c5}" +
    ".cw-status:empty{display:none}" +
    ".cw-form{display:flex;gap:8px;padding:10px;border-top:1px solid #d0d7de;background:#fff}" +
    ".cw-form textarea{flex:1;resize:none;height:44px;padding:8px 10px;border:1px solid #8c959f;border-radius:8px;color:#1f2328;background:#fff}" +
    ".cw-send{border:0;border-radius:8px;padding:0 16px;background:#2457d6;color:#fff;font-weight:600}" +
    ".cw-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}";

  var box = el("div", { class: "cw" });
  var launch = el("button", { type: "button", class: "cw-launch", "aria-expanded": "false", "aria-controls": "cw-panel" }, "Chat");
  var badge = el("span", { class: "cw-badge", hidden: "" });
  launch.appendChild(badge);
  var panel = el("section", { id: "cw-panel", class: "cw-panel", role: "dialog", "aria-labelledby": "cw-title", hidden: "" });
  var head = el("div", { class: "cw-head" });
  head.appendChild(el("h2", { id: "cw-title" }, TITLE));
  var close = el("button", { type: "button", class: "cw-close", "aria-label": "Close chat" }, "\u00d7");
  head.appendChild(close);
  var log = el("ol", { class: "cw-log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  var empty = el("li", { class: "cw-empty" }, "Ask us anything: we usually answer in a few minutes.");
  log.appendChild(empty);
  var status = el("p", { class: "cw-status", role: "status" });
  var form = el("form", { class: "cw-form" });
  var input = el("textarea", { id: "cw-input", maxlength: "2000", rows: "1", placeholder: "Write a message\u2026" });
  var label = el("label", { for: "cw-input", class: "cw-sr" }, "Your message (Enter sends, Shift+Enter for a new line)");
  var send = el("button", { type: "submit", class: "cw-send" }, "Send");
  form.appendChild(label);
  form.appendChild(input);
  form.appendChild(send);
  panel.appendChild(head);
  panel.appendChild(log);
  panel.appendChild(status);
  panel.appendChild(form);
  box.appendChild(panel);
  box.appendChild(launch);
  root.appendChild(style);
  root.appendChild(box);

  function isOpen() {
    return !panel.hidden;
  }
  function open() {
    panel.hidden = false;
    launch.setAttribute("aria-expanded", "true");
    unread = 0;
    badge.hidden = true;
    launch.removeAttribute("aria-label");
    log.scrollTop = log.scrollHeight;
    input.focus();
  }
  function shut() {
    panel.hidden = true;
    launch.setAttribute("aria-expanded", "false");
    launch.focus();
  }
  launch.addEventListener("click", function () {
    if (isOpen()) shut();
    else open();
  });
  close.addEventListener("click", shut);
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      e.preventDefault();
      shut();
    }
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    submit();
  });

  var statusKind = "";
  function say(text, kind) {
    status.textContent = text;
    statusKind = text ? kind || "info" : "";
  }
  function clear(kind) {
    if (statusKind === kind) say("");
  }

  function bubble(role, text) {
    var li = el("li", { class: "cw-msg cw-" + role });
    li.appendChild(el("span", { class: "cw-sr" }, role === "user" ? "You: " : "Support: "));
    li.appendChild(document.createTextNode(text));
    return li;
  }
  // Stored messages in id order (the server's), unconfirmed sends last in the order written:
  // a send retried after an outage lands after a reply written meanwhile, and shows so.
  function add(li, id) {
    if (empty.parentNode) log.removeChild(empty);
    var stuck = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    var next = null;
    if (id) {
      li.mid = id;
      next = log.querySelector(".cw-pending");
      for (var prev = next ? next.previousSibling : log.lastChild; prev && (prev === li || prev.mid > id); prev = prev.previousSibling) {
        if (prev !== li) next = prev;
      }
    }
    if (li.nextSibling !== next || !li.parentNode) log.insertBefore(li, next);
    if (stuck || li.className.indexOf("cw-user") >= 0) log.scrollTop = log.scrollHeight;
  }

  // One message from the server, however it came: shown once, by its integer id.
  function show(m, received) {
    if (received && m.id > cursor) cursor = m.id;
    if (seen[m.id]) return;
    seen[m.id] = 1;
    var mine = pending[m.message_id];
    if (mine) {
      delete pending[m.message_id];
      mine.classList.remove("cw-pending");
      return add(mine, m.id);
    }
    add(bubble(m.role, m.content), m.id);
    if (m.role !== "user" && !isOpen()) {
      unread += 1;
      badge.textContent = unread;
      badge.hidden = false;
      launch.setAttribute("aria-label", "Chat, " + unread + " new");
    }
  }
  function reset() {
    gen += 1;
    if (source) source.close();
    source = null;
    key = null;
    store(null);
    cursor = 0;
    seen = {};
    pending = {};
    while (log.firstChild) log.removeChild(log.firstChild);
    log.appendChild(empty);
  }

  // ---- HTTP: fetch with the retries every call needs ----
  function sleep(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }
  // Retries wait for their backoff, or less: until the connection is seen back (wake).
  var wakers = [];
  function nap(ms) {
    return new Promise(function (resolve) {
      function go() {
        clearTimeout(timer);
        wakers = wakers.filter(function (w) {
          return w !== go;
        });
        resolve();
      }
      var timer = setTimeout(go, ms);
      wakers.push(go);
    });
  }
  function wake() {
    wakers.slice().forEach(function (go) {
      go();
    });
  }
  // The connection is seen back (online, the page shown again, a server's answer): retries go
  // now, and a stream that lost its connection reopens from the last id received instead of
  // waiting for the browser's next attempt (a few seconds).
  function resume() {
    wake();
    if (source && source.lost && source.readyState === 0) {
      source.close();
      stream(gen);
    }
  }
  window.addEventListener("online", resume);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) resume();
  });
  function retryAfter(response, body) {
    var s = parseInt(response.headers.get("Retry-After"), 10);
    if (!(s > 0) && body && body.error && body.error.details) s = body.error.details.retry_after;
    return Math.max(1, s || 1);
  }
  // Resolves {status, body}; network errors, 5xx and 429 are retried here (with the
  // same body, so a send keeps its client id). Resolves null once `wanted` says stop.
  function call(method, url, body, wanted, timeout) {
    var delay = 1000;
    function attempt() {
      if (wanted && !wanted()) return Promise.resolve(null);
      var ctrl = window.AbortController ? new AbortController() : null;
      var timer = ctrl && setTimeout(function () {
        ctrl.abort();
      }, timeout || 20000);
      var init = { method: method, signal: ctrl && ctrl.signal, credentials: "omit", cache: "no-store" };
      if (body) {
        init.headers = { "Content-Type": "application/json" };
        init.body = JSON.stringify(body);
      }
      return fetch(url, init).then(
        function (response) {
          clearTimeout(timer);
          return response.json().catch(function () {
            return null;
          }).then(function (json) {
            clear("net");
            if (response.status < 500) resume(); // the server is back: the others need not wait
            if (response.status === 429) {
              var s = retryAfter(response, json);
              say("Too many requests: trying again in " + s + " s.", "limit");
              return sleep(s * 1000).then(function () {
                clear("limit");
                return attempt();
              });
            }
            if (response.status >= 500) return again();
            return { status: response.status, body: json };
          });
        },
        function () {
          clearTimeout(timer);
          return again();
        }
      );
    }
    // Backoff: 1, 2, 4, then every 5 s while the page is seen (30 s while hidden).
    function again() {
      var wait = Math.min(delay, document.hidden ? 30000 : 5000);
      say("Connection lost: reconnecting in " + Math.round(wait / 1000) + " s\u2026", "net");
      delay = Math.min(delay * 2, 30000);
      return nap(wait).then(attempt);
    }
    return attempt();
  }

  // ---- receiving: history by polling, then the event stream, else long-polls ----
  function receive(g) {
    if (g !== gen || !key) return;
    if (window.EventSource && Date.now() >= streamAgainAt) stream(g);
    else poll(g, WAIT);
  }
  function purged() {
    reset();
    say("This conversation has ended. Send a message to start a new one.", "ended");
  }
  function poll(g, wait) {
    var started = Date.now();
    var url = BASE + key + "/messages?last_message_id=" + cursor + (wait ? "&wait=" + wait : "");
    return call("GET", url, null, function () {
      return g === gen;
    }, (wait + 15) * 1000).then(function (r) {
      if (!r || g !== gen) return;
      if (r.status === 404) return purged();
      if (r.status !== 200) return sleep(5000).then(function () {
        receive(g);
      });
      r.body.data.forEach(function (m) {
        show(m, true);
      });
      if (!wait) return r.body.meta.has_more ? poll(g, 0) : receive(g);
      // A server that answers at once (no long-poll) is still asked once a second at most.
      var rest = r.body.data.length ? 0 : 1000 - (Date.now() - started);
      setTimeout(function () {
        receive(g);
      }, Math.max(0, rest));
    });
  }
  function stream(g) {
    var es = new EventSource(BASE + key + "/events?last_message_id=" + cursor);
    source = es;
    es.addEventListener("message", function (e) {
      if (g === gen) show(JSON.parse(e.data), true);
    });
    es.onopen = function () {
      es.lost = 0;
      clear("net");
      wake();
    };
    es.onerror = function () {
      if (g !== gen) return es.close();
      es.lost = 1;
      if (es.readyState === 2) {
        // Refused (404, 429, no stream here, CORS): long-poll, whose answer says why.
        source = null;
        streamAgainAt = Date.now() + 300000;
        poll(g, WAIT);
      } else {
        // The browser reconnects by itself (a server ends streams every few minutes): say so only if it lasts.
        setTimeout(function () {
          if (g === gen && es.readyState === 0) say("Connection lost: reconnecting\u2026", "net");
        }, 2000);
      }
    };
  }
  function start() {
    var g = gen;
    // The whole history first, from 0: a reload shows the conversation again.
    poll(g, 0);
  }

  // ---- sending ----
  function session() {
    if (key) return Promise.resolve(key);
    if (!creating) {
      creating = call("POST", BASE + "sessions", {}).then(function (r) {
        creating = null;
        if (!r || r.status !== 201) throw new Error((r && r.body && r.body.message) || "Could not start a chat");
        key = r.body.data.session_key;
        store(key);
        clear("ended");
        start();
        return key;
      });
    }
    return creating;
  }
  function clientId() {
    var bytes = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return "cw_" + Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }
  function deliver(id, text, li, fresh) {
    return session().then(function (k) {
      return call("POST", BASE + k + "/messages", { content: text, id: id }).then(function (r) {
        if (r.status === 201) return show(r.body.data, false);
        if (r.status === 404 && !fresh) {
          // Purged while we wrote: a new conversation, with this message first.
          reset();
          pending[id] = li;
          add(li);
          return deliver(id, text, li, true);
        }
        throw new Error((r.body && r.body.message) || "Not sent");
      });
    }).catch(function (err) {
      delete pending[id];
      li.classList.remove("cw-pending");
      li.classList.add("cw-failed");
      li.appendChild(el("span", { class: "cw-sr" }, " (not sent)"));
      say("Not sent: " + err.message, "send");
    });
  }
  function submit() {
    var text = input.value;
    if (!text.trim()) return;
    input.value = "";
    clear("send");
    var id = clientId();
    var li = bubble("user", text);
    li.classList.add("cw-pending");
    pending[id] = li;
    add(li);
    queue = queue.then(function () {
      return deliver(id, text, li, false);
    });
  }

  function mount() {
    document.body.appendChild(host);
    if (key) start();
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
