// Live refresh of the operations dashboard: re-fetch the server-rendered panels and swap them in.
// Served from our own origin (CSP script-src 'self'); no chart library, the charts are server-side SVG.
const root = document.getElementById("ops-dash");
if (root) {
  const every = Math.max(5, Number(root.dataset.refresh) || 15) * 1000;
  const target = document.getElementById("ops-panels");
  const stamp = document.getElementById("ops-refreshed");
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const r = await fetch(root.dataset.panelsUrl, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (r.ok) {
        target.innerHTML = await r.text();
        stamp.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
        root.dataset.refreshes = String((Number(root.dataset.refreshes) || 0) + 1);
      } else {
        stamp.textContent = r.status === 403 || r.status === 302 ? "Signed out: reload to sign in." : "Refresh failed (HTTP " + r.status + ").";
      }
    } catch {
      stamp.textContent = "Offline: showing the last figures.";
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  window.opsDashboardRefresh = refresh;
}
