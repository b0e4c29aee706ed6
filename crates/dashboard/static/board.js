// refbus board: ticking countdowns and the live feed (server-sent events). Hand-written, no
// build step, served from the binary. The server's clock rules: each row carries the server's
// "now" when it was rendered (data-now) and its deadline (data-deadline), both in ms.
(function () {
  "use strict";

  function format(ms) {
    var sign = ms < 0 ? "-" : "";
    var s = Math.floor(Math.abs(ms) / 1000);
    var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
    return sign + h + ":" + (m < 10 ? "0" : "") + m + ":" + (r < 10 ? "0" : "") + r;
  }

  function stamp(row) {
    row.dataset.received = String(Date.now());
  }

  function tick() {
    var rows = document.querySelectorAll("tr.referral");
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var deadline = row.dataset.deadline;
      if (!deadline) continue;
      var serverNow = Number(row.dataset.now) + (Date.now() - Number(row.dataset.received || Date.now()));
      var left = Number(deadline) - serverNow;
      var cell = row.querySelector(".countdown");
      if (cell) {
        cell.textContent = format(left);
        cell.classList.toggle("overdue", left < 0);
      }
    }
  }

  function place(row) {
    var body = document.getElementById("board-rows");
    if (!body) return;
    var old = body.querySelector('tr[data-referral="' + row.dataset.referral + '"]');
    if (old) old.remove();
    var key = Number(row.dataset.sort);
    var next = null;
    var rows = body.querySelectorAll("tr.referral");
    for (var i = 0; i < rows.length; i++) {
      if (Number(rows[i].dataset.sort) > key) { next = rows[i]; break; }
    }
    body.insertBefore(row, next);
    stamp(row);
  }

  function parseRow(html) {
    var table = document.createElement("tbody");
    table.innerHTML = html.trim();
    return table.querySelector("tr.referral");
  }

  function emptyNotice() {
    var body = document.getElementById("board-rows");
    var empty = document.getElementById("board-empty");
    if (body && empty) empty.hidden = body.querySelector("tr.referral") !== null;
  }

  function status(state) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.dataset.status = state;
    el.textContent = el.dataset["text" + state.charAt(0).toUpperCase() + state.slice(1)] || state;
  }

  var rows = document.querySelectorAll("tr.referral");
  for (var i = 0; i < rows.length; i++) stamp(rows[i]);
  tick();
  setInterval(tick, 1000);

  if (!window.EventSource) return;
  // Every page follows the feed: the board for its rows, every page for the alerts on top.
  var query = window.location.search ? window.location.search + "&" : "?";
  var url = "/events" + query + "since=" + encodeURIComponent(document.body.dataset.eventId || "");
  var source = new EventSource(url);
  source.onopen = function () { status("live"); };
  source.onerror = function () { status("lost"); };
  source.addEventListener("board", function (e) {
    status("live");
    var body = document.getElementById("board-rows");
    if (body) {
      body.innerHTML = e.data;
      var all = body.querySelectorAll("tr.referral");
      for (var i = 0; i < all.length; i++) stamp(all[i]);
      emptyNotice();
      tick();
    }
  });
  source.addEventListener("row", function (e) {
    var row = parseRow(e.data);
    if (row) { place(row); emptyNotice(); tick(); }
  });
  source.addEventListener("remove", function (e) {
    var old = document.querySelector('tr[data-referral="' + e.data + '"]');
    if (old) old.remove();
    emptyNotice();
  });
  source.addEventListener("alerts", function (e) {
    var alerts = document.getElementById("alerts");
    if (alerts) alerts.innerHTML = e.data;
  });
})();
