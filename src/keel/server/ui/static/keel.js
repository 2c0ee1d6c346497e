// keel's UI: progressive enhancement only; every page works without this file.
// - [data-title] on SVG marks: a tooltip with the exact value on hover/focus;
// - table.sortable: click (or Enter on) a header to sort the rows on the client;
// - form[data-autosubmit]: a select change submits the form.
(function () {
  "use strict";
  let tip = null;
  function showTip(ev, text) {
    if (!tip) { tip = document.createElement("div"); tip.className = "tip"; tip.setAttribute("role", "tooltip"); document.body.appendChild(tip); }
    tip.textContent = text; tip.style.display = "block";
    const x = ev.clientX !== undefined ? ev.clientX : ev.target.getBoundingClientRect().left;
    const y = ev.clientY !== undefined ? ev.clientY : ev.target.getBoundingClientRect().top;
    tip.style.left = (x + 12) + "px"; tip.style.top = (y + 12) + "px";
  }
  function hideTip() { if (tip) tip.style.display = "none"; }
  document.addEventListener("mouseover", function (ev) {
    const el = ev.target.closest ? ev.target.closest("[data-title]") : null;
    if (el) showTip(ev, el.getAttribute("data-title")); else hideTip();
  });
  document.addEventListener("focusin", function (ev) {
    const el = ev.target.closest ? ev.target.closest("[data-title]") : null;
    if (el) showTip(ev, el.getAttribute("data-title"));
  });
  document.addEventListener("focusout", hideTip);

  function sortTable(th) {
    const table = th.closest("table"); const body = table.tBodies[0]; if (!body) return;
    const index = Array.prototype.indexOf.call(th.parentNode.children, th);
    const asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    const rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      const x = a.cells[index] ? a.cells[index].getAttribute("data-sort") || a.cells[index].textContent.trim() : "";
      const y = b.cells[index] ? b.cells[index].getAttribute("data-sort") || b.cells[index].textContent.trim() : "";
      const nx = parseFloat(x.replace(/,/g, "")), ny = parseFloat(y.replace(/,/g, ""));
      const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.addEventListener("click", function (ev) {
    const th = ev.target.closest ? ev.target.closest("table.sortable th") : null;
    if (th) sortTable(th);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && ev.target.matches && ev.target.matches("table.sortable th")) sortTable(ev.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable th").forEach(function (th) { th.tabIndex = 0; });
    document.querySelectorAll("form[data-autosubmit] select").forEach(function (s) {
      s.addEventListener("change", function () { s.form.submit(); });
    });
  });
})();
