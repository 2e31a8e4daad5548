// Atelier gallery: progressive enhancement only; every page works without this file.
// 1. A job page follows its job over the server-sent event stream (progress, ETA, status) and
//    reloads once the job ends, so that the result links and the final events appear.
// 2. The jobs list re-fetches its rows every few seconds while any job on it is still moving.
(function () {
  "use strict";
  var TERMINAL = ["succeeded", "partially_succeeded", "failed", "cancelled"];

  function followJob(section) {
    if (!window.EventSource || TERMINAL.indexOf(section.dataset.status) >= 0) return;
    var source = new EventSource(section.dataset.stream);
    var field = function (name) { return section.querySelector('[data-field="' + name + '"]'); };
    source.addEventListener("job", function (event) {
      var job = JSON.parse(event.data);
      var bar = field("progress");
      bar.max = job.progress.total || 1;
      bar.value = job.progress.done;
      field("count").textContent = job.progress.done + "/" + job.progress.total;
      field("eta").textContent = job.eta_seconds ? "ETA " + Math.round(job.eta_seconds) + " s" : "";
      var status = field("status");
      status.textContent = job.status;
      status.className = "status " + job.status;
      section.dataset.status = job.status;
      if (TERMINAL.indexOf(job.status) >= 0) {
        source.close();  // or EventSource would reconnect to a stream that has ended
        window.location.reload();
      }
    });
  }

  function refreshRows(table) {
    var body = table.querySelector("tbody");
    var moving = function () {
      return Array.prototype.some.call(body.querySelectorAll("tr[data-status]"), function (row) {
        return TERMINAL.indexOf(row.dataset.status) < 0;
      });
    };
    window.setInterval(function () {
      if (!moving() || document.hidden) return;
      fetch(table.dataset.refresh, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) body.innerHTML = html; });
    }, 3000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var job = document.getElementById("job");
    if (job) followJob(job);
    var table = document.querySelector("table[data-refresh]");
    if (table) refreshRows(table);
  });
})();
