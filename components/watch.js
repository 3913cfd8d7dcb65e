// The run watcher of the Prune and Search pages (components/watch.py): every `every_ms` the tab fetches the run
// store's change stamp (a few bytes the server hands out as a file: no script run, no query) and, only when it
// differs from the value Python drew the page with, fires the trigger `changed` — the one rerun that then shows
// the run started elsewhere. A hidden tab does not poll; it looks once when it becomes visible again.
//
// data from Python: {url, stamp, every_ms}

function look(w) {
  if (w.busy || document.hidden || !w.url) return;
  w.busy = true;
  fetch(w.url, { cache: 'no-store', credentials: 'same-origin' })
    .then((r) => (r.ok ? r.text() : (r.status === 404 ? '' : null)))  // 404: no change written yet
    .then((text) => {
      w.looks = (w.looks || 0) + 1;
      if (text === null || text === w.seen || text === w.fired) return;
      w.fired = text;  // once per new value, even if the rerun is slow to come
      w.trigger('changed', text);
    })
    .catch(() => { /* the server is away (a restart): the next look tries again */ })
    .finally(() => { w.busy = false; });
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const w = parentElement.__nrw || (parentElement.__nrw = { timer: 0 });
  window.__nr = window.__nr || {};
  window.__nr.watch = w;  // (tests and benches read its counters)
  w.url = data && data.url;
  w.seen = data ? String(data.stamp) : '';
  w.trigger = setTriggerValue;
  const every = Math.max(250, Number(data && data.every_ms) || 1000);
  if (!w.timer || w.every !== every) {
    clearInterval(w.timer);
    w.every = every;
    w.timer = setInterval(() => look(w), every);
  }
  if (!w.onVisible) {
    w.onVisible = () => { if (!document.hidden) look(w); };
    document.addEventListener('visibilitychange', w.onVisible);
  }
  return () => {
    clearInterval(w.timer); w.timer = 0;
    document.removeEventListener('visibilitychange', w.onVisible); w.onVisible = null;
  };
}
