/* The staff inbox: guest conversations (awaiting a reply first), live from the inbox
 * stream; a conversation is read through the guest poll/stream endpoints and answered
 * through the staff reply endpoint. Text is only ever inserted as text. */
(function () {
  "use strict";
  var API = "/api/v1/chat/guest/";
  var CSRF = document.body.getAttribute("data-csrf");
  function $(id) {
    return document.getElementById(id);
  }
  var list = $("sessions");
  var listEmpty = $("sessions-empty");
  var live = $("live");
  var onlyAwaiting = $("only-awaiting");
  var title = $("conversation-title");
  var messages = $("messages");
  var convStatus = $("conversation-status");
  var form = $("reply");
  var text = $("reply-text");
  var replyError = $("reply-error");
  var rows = {}; // session_key -> inbox row
  var current = null; // the open conversation: {key, cursor, seen, source}

  function el(tag, cls, txt) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (txt) node.textContent = txt;
    return node;
  }
  function sleep(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }
  function retryAfter(r) {
    var s = parseInt(r.response.headers.get("Retry-After"), 10);
    return s > 0 ? s : 1;
  }
  function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", cache: "no-store", headers: {} };
    if (body) {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRFToken"] = CSRF;
      init.body = JSON.stringify(body);
    }
    return fetch(/^(https?:)?\//.test(path) ? path : API + path, init).then(function (response) {
      return response.json().catch(function () {
        return null;
      }).then(function (json) {
        return { status: response.status, body: json, response: response };
      });
    });
  }

  // ---- the list ----
  function name(row) {
    return row.guest_name || "Guest " + String(row.id).replace(/^guest_/, "").slice(0, 6);
  }
  function when(iso) {
    var d = new Date(iso);
    var today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString();
  }
  function render() {
    var shown = Object.keys(rows).map(function (k) {
      return rows[k];
    }).filter(function (row) {
      return !onlyAwaiting.checked || row.awaiting_reply;
    }).sort(function (a, b) {
      if (a.awaiting_reply !== b.awaiting_reply) return a.awaiting_reply ? -1 : 1;
      return a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : 0;
    });
    var focused = document.activeElement && document.activeElement.getAttribute("data-key");
    list.textContent = "";
    shown.forEach(function (row) {
      var li = el("li");
      var button = el("button");
      button.type = "button";
      button.setAttribute("data-key", row.session_key);
      if (current && current.key === row.session_key) button.setAttribute("aria-current", "true");
      var top = el("span", "row-top");
      top.appendChild(el("span", "name", name(row)));
      top.appendChild(el("span", "when", when(row.updated_at)));
      button.appendChild(top);
      var said = row.last_role === "user" ? "" : "Staff: ";
      button.appendChild(el("span", "preview", said + (row.last_message_preview || "")));
      if (row.awaiting_reply) button.appendChild(el("span", "awaiting", "awaiting reply"));
      button.addEventListener("click", function () {
        openConversation(row.session_key);
      });
      li.appendChild(button);
      list.appendChild(li);
      if (focused === row.session_key) button.focus();
    });
    listEmpty.hidden = shown.length > 0;
  }
  function upsert(row) {
    var old = rows[row.session_key];
    if (!old || old.updated_at <= row.updated_at) rows[row.session_key] = row;
  }
  function readPages(path, pages, into) {
    return api("GET", path).then(function (r) {
      if (r.status === 401 || r.status === 403) {
        // Logged out (or no longer staff): back to the login, then here.
        location.assign("/admin/login/?next=" + encodeURIComponent(location.pathname));
      }
      if (r.status !== 200) throw new Error((r.body && r.body.message) || "HTTP " + r.status);
      r.body.data.forEach(function (row) {
        into.push(row);
      });
      var next = r.body.meta && r.body.meta.next;
      if (next && pages > 1) return readPages(next, pages - 1, into);
      return into;
    });
  }
  function loadInbox() {
    // Everything awaiting a reply (up to 5 pages), and the latest of the rest.
    return Promise.all([readPages("inbox?awaiting_reply=true", 5, []), readPages("inbox", 1, [])]).then(
      function (both) {
        rows = {};
        both[0].concat(both[1]).forEach(upsert);
        render();
      },
      function (err) {
        live.textContent = "Could not read the inbox: " + err.message;
      }
    );
  }
  onlyAwaiting.addEventListener("change", render);

  // The inbox stream has no resume ids: every (re)connection re-reads the inbox.
  var backoff = 1000;
  function listen() {
    var es = new EventSource(API + "inbox/events");
    es.onopen = function () {
      backoff = 1000;
      live.textContent = "";
      loadInbox();
    };
    es.addEventListener("session", function (e) {
      upsert(JSON.parse(e.data));
      render();
    });
    es.onerror = function () {
      if (es.readyState === 2) {
        es.close();
        live.textContent = "Live updates lost: reconnecting in " + backoff / 1000 + " s\u2026";
        setTimeout(function () {
          loadInbox();
          listen();
        }, backoff);
        backoff = Math.min(backoff * 2, 30000);
      } else {
        // The browser reconnects by itself (a server ends streams every few minutes): say so only if it lasts.
        setTimeout(function () {
          if (es.readyState === 0) live.textContent = "Live updates lost: reconnecting\u2026";
        }, 2000);
      }
    };
  }

  // ---- one conversation ----
  function showMessage(c, m, received) {
    if (received && m.id > c.cursor) c.cursor = m.id;
    if (c.seen[m.id] || c !== current) return;
    c.seen[m.id] = 1;
    var li = el("li", "msg msg-" + m.role);
    li.setAttribute("data-id", m.id);
    li.appendChild(el("span", "who-said", m.role === "user" ? "Guest" : "Staff"));
    li.appendChild(document.createTextNode(m.content));
    // In id order, even when a reply's own answer comes before the stream's older messages.
    var after = messages.lastElementChild;
    while (after && Number(after.getAttribute("data-id")) > m.id) after = after.previousElementSibling;
    messages.insertBefore(li, after ? after.nextSibling : messages.firstChild);
    messages.scrollTop = messages.scrollHeight;
  }
  function convPoll(c, wait, delay) {
    if (c !== current) return;
    var started = Date.now();
    api("GET", c.key + "/messages?last_message_id=" + c.cursor + (wait ? "&wait=" + wait : "")).then(
      function (r) {
        if (c !== current) return;
        if (r.status === 404) {
          convStatus.textContent = "This conversation no longer exists (purged).";
          form.hidden = true;
          return;
        }
        if (r.status === 429) return sleep(retryAfter(r) * 1000).then(function () {
          convPoll(c, wait, delay);
        });
        if (r.status !== 200) throw new Error("HTTP " + r.status);
        convStatus.textContent = "";
        r.body.data.forEach(function (m) {
          showMessage(c, m, true);
        });
        if (!wait) return r.body.meta.has_more ? convPoll(c, 0) : convStream(c);
        var rest = r.body.data.length ? 0 : 1000 - (Date.now() - started);
        setTimeout(function () {
          convPoll(c, wait);
        }, Math.max(0, rest));
      }
    ).catch(function () {
      var d = Math.min(delay || 1000, 30000);
      convStatus.textContent = "Connection lost: reconnecting in " + d / 1000 + " s\u2026";
      setTimeout(function () {
        convPoll(c, wait, d * 2);
      }, d);
    });
  }
  function convStream(c) {
    if (!window.EventSource) return convPoll(c, 25);
    var es = new EventSource(API + c.key + "/events?last_message_id=" + c.cursor);
    c.source = es;
    es.addEventListener("message", function (e) {
      showMessage(c, JSON.parse(e.data), true);
    });
    es.onopen = function () {
      convStatus.textContent = "";
    };
    es.onerror = function () {
      if (c !== current) return es.close();
      if (es.readyState === 2) {
        c.source = null;
        convPoll(c, 25); // refused: long-poll instead, whose answer says why
      } else {
        setTimeout(function () {
          if (c === current && es.readyState === 0) convStatus.textContent = "Connection lost: reconnecting\u2026";
        }, 2000);
      }
    };
  }
  function openConversation(key) {
    if (current && current.source) current.source.close();
    current = { key: key, cursor: 0, seen: {}, source: null };
    messages.textContent = "";
    convStatus.textContent = "";
    replyError.textContent = "";
    title.textContent = rows[key] ? name(rows[key]) : "Guest";
    form.hidden = false;
    render();
    convPoll(current, 0);
    text.focus();
  }

  // ---- replying: the staff reply endpoint, the one way staff write ----
  function clientId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "inbox_" + Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }
  var sending = false;
  function reply() {
    var c = current;
    var content = text.value;
    if (!c || sending || !content.trim()) return;
    sending = true;
    replyError.textContent = "";
    // One client id for the reply and all its retries: the server stores it once.
    deliver(c, { content: content, id: clientId() }, 1000);
  }
  // Network errors, 5xx and 429 are retried with the same body (backoff 1 s doubling to 10 s,
  // or Retry-After); anything else is final.
  function deliver(c, body, delay) {
    function again(wait, why) {
      replyError.textContent = why + ": sending again in " + Math.round(wait / 1000) + " s\u2026";
      setTimeout(function () {
        deliver(c, body, Math.min(delay * 2, 10000));
      }, wait);
    }
    api("POST", c.key + "/replies", body).then(
      function (r) {
        if (r.status === 429) return again(retryAfter(r) * 1000, "Too many requests");
        if (r.status >= 500) return again(delay, "Not sent yet");
        sending = false;
        if (r.status === 201) {
          if (c === current && text.value === body.content) text.value = "";
          replyError.textContent = "";
          showMessage(c, r.body.data, false);
        } else if (r.status === 401 || r.status === 403) {
          replyError.textContent = "Not sent: your login has ended. Reload the page to log in again.";
        } else {
          replyError.textContent = "Not sent: " + ((r.body && r.body.message) || "HTTP " + r.status);
        }
      },
      function () {
        again(delay, "Connection lost");
      }
    );
  }
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    reply();
  });
  text.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      reply();
    }
  });

  loadInbox();
  if (window.EventSource) listen();
})();
