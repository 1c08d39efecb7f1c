// Concord studio, in the browser: unsent drafts kept in localStorage, keyboard shortcuts (a list on `?`), the focus
// after each submit, the raw-text view, and paste events of the Write editor. Loaded once per page through
// launch(head=...) (studio.app.LAUNCH_KWARGS); event handlers in the tabs
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

  // Keep in step with studio.validation.reasoning_length and studio.tabs.rater.count_line: whitespace runs count
  // once and invisible characters not at all, so padding never reaches the minimum.
  function reasoningLength(text) {
    return (text || "").replace(/[\u200b-\u200d\u2060\ufeff]/g, "").trim().replace(/\s+/g, " ").length;
  }

  function count(text, minimum) {
    const n = reasoningLength(text);
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

  // History: the first shown element matching `selector` inside `id` takes the focus (/ the search, O the list).
  function focusIn(id, selector) {
    const element = shown(byId(id)) ? byId(id).querySelector(selector) : null;
    element?.focus();
    return !!element;
  }

  // The item on screen takes the focus (not a text field, so the next key chooses) with the view at its top.
  function focusTask(tab) {
    const task = byId(`${tab}-task`);
    if (!shown(task)) return false;
    task.tabIndex = -1;
    task.focus({ preventScroll: true });
    return true;
  }

  // After an item is shown (a submit, Next, a reload): back to the top of the page and of every pane, the focus on
  // the item; a just-saved status line flashes. Only for the tab on screen: a campaign change never steals the focus
  // from the other tab's text. `lastReady` is read by benchmarks/rater_ui.py.
  let submittedAt = null;
  function ready(tab) {
    disarm();
    const task = byId(`${tab}-task`);
    if (!shown(task)) return;
    window.scrollTo(0, 0);
    for (const pane of task.querySelectorAll(".concord-pane-body")) pane.scrollTop = 0;
    const focused = focusTask(tab);
    const status = byId(`${tab}-status`);
    if (status?.textContent.includes("✓")) {
      status.classList.remove("concord-flash");
      void status.offsetWidth; // restart the animation
      status.classList.add("concord-flash");
    }
    const key = document.querySelector(`#${tab}-draft-key textarea, #${tab}-draft-key input`)?.value || "";
    const at = performance.now();
    window.concord.lastReady = { key, focused, at, sinceSubmit: submittedAt === null ? null : at - submittedAt };
    submittedAt = null;
  }

  // Raw text or rendered markdown, for every pane at once (key M, or the toggle in a response's title bar); the
  // History tab's reopened judgment follows the same setting.
  function raw(on) {
    byId("history-task")?.classList.toggle("concord-raw", on);
    return byId("compare-task")?.classList.toggle("concord-raw", on);
  }
  document.addEventListener("click", (event) => {
    if (event.target.closest?.(".concord-raw-toggle")) raw();
  });

  // A rubric criterion's key arms it; the next 1-5 scores it, 0 leaves it not rated; Esc or any other key disarms.
  const CRITERION_KEYS = "asdfhjkl";
  let armed = null;
  function disarm() {
    if (armed) byId(armed)?.classList.remove("concord-armed");
    armed = null;
  }
  function arm(form, index) {
    const id = `${form}-score-${index}`;
    disarm();
    if (!shown(byId(id))) return false;
    armed = id;
    byId(id).classList.add("concord-armed");
    byId(id).scrollIntoView({ block: "nearest" });
    return true;
  }

  // The key list of the tab on screen (`?`); a click anywhere or Esc closes it.
  function toggleHelp(force) {
    const help = ["compare-help", "write-help", "history-help"].map(byId).find((element) => element && shown(element.parentElement));
    if (!help) return false;
    help.classList.toggle("concord-open", force);
    return true;
  }
  document.addEventListener("click", (event) => {
    if (event.target.closest?.(".concord-open")) toggleHelp(false);
  });

  // Gradio's dropdown reopens its list on the Tab key that leaves it: swallow Tab there (the focus still moves on).
  document.addEventListener(
    "keydown",
    (event) => {
      if (event.key === "Tab" && event.target.matches?.("input[role=combobox]")) event.stopPropagation();
    },
    true,
  );

  // Outside text fields: 1-5 choose (left much better .. right much better), Shift+1-5 confidence, B both bad,
  // A S D F H J K L then 0-5 a rubric criterion, R reasoning, M raw text, N next, G guidelines, ? the key list;
  // in History, / the search and O the list of results (its arrow keys open the previous or next item).
  // Everywhere: Ctrl/Cmd+Enter submits; Esc closes the key list, disarms a criterion, leaves the reasoning box.
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      submittedAt = performance.now();
      if (clickShown("compare-submit", "write-submit", "history-submit", "history-demo-submit")) event.preventDefault();
      return;
    }
    if (event.key === "Escape") {
      const help = document.querySelector(".concord-open");
      if (help) return toggleHelp(false);
      if (armed) return disarm();
      const box = event.target.closest?.("#compare-reasoning, #write-editor, #history-reasoning, #history-editor, #history-search");
      if (box) {
        event.target.blur();
        focusTask(box.id.split("-")[0]);
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || isTextField(event.target)) return;
    // The judgment form on screen: Compare's item, or a judgment reopened in History; the same keys act on both.
    const form = ["compare", "history"].find((tab) => shown(byId(`${tab}-task`)));
    const comparing = !!form;
    const digit = /^(Digit|Numpad)([0-5])$/.exec(event.code);
    const key = event.key.toLowerCase();
    let done = false;
    if (event.key === "?") done = toggleHelp();
    else if (digit && comparing && armed && !event.shiftKey) {
      done = pick(armed, Number(digit[2]));
      disarm();
    } else if (digit && digit[2] !== "0" && comparing) {
      done = pick(`${form}-${event.shiftKey ? "confidence" : "choice"}`, Number(digit[2]) - 1);
    } else if (CRITERION_KEYS.includes(key) && key.length === 1 && comparing) done = arm(form, CRITERION_KEYS.indexOf(key));
    else if (key === "b" && comparing) done = pick(`${form}-both-bad`, 0, "checkbox");
    else if (key === "r" && comparing) {
      byId(`${form}-reasoning`)?.querySelector("textarea")?.focus();
      done = true;
    } else if (key === "m" && comparing) {
      raw();
      done = true;
    }
    else if (key === "n") done = clickShown("compare-next", "write-next");
    else if (key === "/") done = focusIn("history-search", "textarea, input");
    else if (key === "o") done = focusIn("history-list", "input:checked") || focusIn("history-list", "input");
    else if (key === "g") done = clickShown("compare-guidelines", "write-guidelines");
    if (!CRITERION_KEYS.includes(key) && !digit) disarm();
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

  window.concord = { save, restore, clear, count, ready, raw, lastReady: null };
})();
