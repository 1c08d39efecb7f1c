// Concord studio, in the browser: unsent drafts kept in localStorage, keyboard shortcuts, and paste events of the
// Write editor. Loaded once per page through launch(head=...) (studio.app.LAUNCH_KWARGS); event handlers in the tabs
// call window.concord.* from their `js=` snippets, so none of this needs a round trip to the server.
(() => {
  const PREFIX = "concord-draft:";
  const MAX_AGE_MS = 14 * 24 * 3600 * 1000; // a draft whose item was submitted elsewhere is dropped after two weeks

  function save(key, ...values) {
    if (!key) return;
    try {
      localStorage.setItem(PREFIX + key, JSON.stringify({ at: Date.now(), values }));
    } catch (error) {
      console.warn("Concord could not keep this draft in the browser:", error);
    }
  }

  function prune() {
    for (let i = localStorage.length - 1; i >= 0; i--) {
      const name = localStorage.key(i);
      if (!name || !name.startsWith(PREFIX)) continue;
      let at = 0;
      try {
        at = JSON.parse(localStorage.getItem(name)).at || 0;
      } catch (error) {
        at = 0;
      }
      if (Date.now() - at > MAX_AGE_MS) localStorage.removeItem(name);
    }
  }

  // The draft kept for this item, or what is on screen when there is none.
  function restore(key, ...current) {
    prune();
    const raw = key ? localStorage.getItem(PREFIX + key) : null;
    if (!raw) return current;
    try {
      const values = JSON.parse(raw).values;
      return Array.isArray(values) && values.length === current.length ? values : current;
    } catch (error) {
      return current;
    }
  }

  function clear(key) {
    if (key) localStorage.removeItem(PREFIX + key);
  }

  // Keep in step with studio.tabs.rater.count_line.
  function count(text, minimum) {
    const n = (text || "").trim().length;
    const min = Number(minimum) || 0;
    return `${n} characters` + (min ? ` · at least ${min}` : "") + (n >= min ? " ✓" : "");
  }

  const byId = (id) => document.getElementById(id);
  const shown = (element) => !!element && element.getClientRects().length > 0; // inactive tabs are display: none

  function clickShown(...ids) {
    for (const id of ids) {
      const element = byId(id);
      if (shown(element)) {
        (element.tagName === "BUTTON" ? element : element.querySelector("button") || element).click();
        return true;
      }
    }
    return false;
  }

  function pick(id, index, type = "radio") {
    const input = byId(id)?.querySelectorAll(`input[type=${type}]`)[index];
    if (!input) return false;
    input.click();
    return true;
  }

  function isTextField(element) {
    if (!element) return false;
    if (element.isContentEditable || element.tagName === "TEXTAREA" || element.tagName === "SELECT") return true;
    return element.tagName === "INPUT" && !["radio", "checkbox", "range", "button", "submit"].includes(element.type);
  }

  // 1-5 choose (left much better .. right much better), Shift+1-5 confidence, B both bad, N next, G guidelines,
  // Ctrl/Cmd+Enter submit. While typing in a text field only Ctrl/Cmd+Enter acts.
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      if (clickShown("compare-submit", "write-submit")) event.preventDefault();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || isTextField(event.target)) return;
    const comparing = shown(byId("compare-task"));
    const digit = /^(Digit|Numpad)([1-5])$/.exec(event.code);
    const key = event.key.toLowerCase();
    let done = false;
    if (digit && comparing) done = pick(event.shiftKey ? "compare-confidence" : "compare-choice", Number(digit[2]) - 1);
    else if (key === "b" && comparing) done = pick("compare-both-bad", 0, "checkbox");
    else if (key === "n") done = clickShown("compare-next", "write-next");
    else if (key === "g") done = clickShown("compare-guidelines", "write-guidelines");
    if (done) event.preventDefault();
  });

  // A paste into the Write editor is recorded (time and characters pasted) in a hidden field sent with the submit.
  document.addEventListener(
    "paste",
    (event) => {
      if (!event.target.closest || !event.target.closest("#write-editor")) return;
      const field = document.querySelector("#write-pastes textarea, #write-pastes input");
      if (!field) return;
      let events = [];
      try {
        events = JSON.parse(field.value || "[]");
      } catch (error) {
        events = [];
      }
      events.push({ at: new Date().toISOString(), chars: (event.clipboardData?.getData("text") || "").length });
      field.value = JSON.stringify(events);
      field.dispatchEvent(new Event("input", { bubbles: true }));
    },
    true,
  );

  window.concord = { save, restore, clear, count };
})();
