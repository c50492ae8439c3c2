// renkei console: copy buttons and confirmations. Every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("button[data-copy]")) {
    b.hidden = false;
    b.addEventListener("click", async () => {
      const text = document.getElementById(b.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (_) {
        // Without a secure context (plain http), fall back to selecting the text for the reader to copy.
        const r = document.createRange();
        r.selectNodeContents(document.getElementById(b.dataset.copy));
        const s = window.getSelection();
        s.removeAllRanges();
        s.addRange(r);
        document.execCommand("copy");
      }
      const before = b.textContent;
      b.textContent = b.dataset.done;
      setTimeout(() => { b.textContent = before; }, 1500);
    });
  }
  for (const f of document.querySelectorAll("form[data-confirm]")) {
    f.addEventListener("submit", (e) => {
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  }
});
