/* mvfer's labeling-page controls, injected by mvfer_ls_guard.py into Label Studio's labeling pages.
 *
 * Why: in Label Studio 1.21+ the player's "step" moves by the video hop size (10 frames by default;
 * the timeline's step size falls back to the hop size), clicking the timeline is not frame-exact,
 * nothing stops a mark past the end of the take, and marks cannot be placed from the keyboard.
 * Here: the hop size is set to 1 (so Label Studio's own step buttons move one frame), ArrowLeft /
 * ArrowRight step one frame, Space plays/pauses, O / A / E put the onset / apex / offset mark on
 * the frame shown (replacing an earlier mark of that kind), the video is scaled up to fill its box
 * (Label Studio never scales above the file's own size), Z / X zoom the face in / out, and
 * Submit is held back, with the reason shown in red, while onset or apex is missing, repeated,
 * outside the take or out of order. The server refuses the same annotations (mvfer_ls_guard.py).
 * "The frame shown" is the frame on which Label Studio's counter and the <video> element agree: a step or a
 * mark pressed while the video is still seeking waits for it (under load the counter can run ahead of the
 * picture for a moment, and a mark would otherwise land on the frame before).
 */
(function () {
  "use strict";
  var MARKS = "marks", VIDEO = "video";
  var KEYS = { o: "onset", a: "apex", e: "offset" };

  function store() { return window.Htx || null; }
  function annotation() { var s = store(); return s && s.annotationStore && s.annotationStore.selected; }
  function video() { var a = annotation(); return a && a.names && a.names.get(VIDEO); }
  function marksControl() { var a = annotation(); return a && a.names && a.names.get(MARKS); }
  function typing(el) {
    if (!el) return false;
    var tag = (el.tagName || "").toLowerCase();
    var kind = (el.getAttribute && (el.getAttribute("type") || "").toLowerCase()) || "";
    if (tag === "input" && ["checkbox", "radio", "button", "submit"].indexOf(kind) >= 0) return false;  // a ticked choice keeps focus
    return tag === "input" || tag === "textarea" || tag === "select" || el.isContentEditable;
  }

  function fixHopSize() {
    var s = store();
    if (s && s.settings && s.settings.videoHopSize !== 1 && s.settings.setVideoHopSize) s.settings.setVideoHopSize(1);
  }

  function fps() {
    var data = store() && store().task && store().task.dataObj;
    var v = video();
    return Number(data && data.fps) || Number(v && v.framerate) || 24;
  }

  function shownFrame() {
    /* the frame the <video> really shows (1-based); null while it is seeking or not decoded */
    var el = document.querySelector("video"), n = takeLength();
    if (!el || el.readyState < 2 || el.seeking) return null;
    var k = Math.round(el.currentTime * fps()) + 1;
    return n ? Math.min(Math.max(k, 1), n) : k;
  }

  function currentFrame() {
    /* the frame shown, once Label Studio's counter and the video agree on it (null while they do not:
       a step is still seeking); marks and steps wait for it, so a mark is never put on a frame not shown */
    var v = video();
    if (!v) return null;
    var k = Math.round(v.frame);
    return shownFrame() === k ? k : null;
  }

  function whenSettled(fn, tries) {
    if (currentFrame() !== null) return fn();
    if ((tries || 0) < 40) setTimeout(function () { whenSettled(fn, (tries || 0) + 1); }, 75);
  }
  function takeLength() {
    var v = video();
    var a = annotation();
    var data = store() && store().task && store().task.dataObj;
    var n = data && Number(data.n_frames);
    return n || (v ? v.length : null);
  }

  function marks() {
    /* {label: [[start, end], ...]} from the page's own annotation */
    var out = {};
    var a = annotation();
    if (!a) return out;
    var res = a.serializeAnnotation ? a.serializeAnnotation() : [];
    res.forEach(function (r) {
      if (r.from_name !== MARKS || r.type !== "timelinelabels") return;
      (r.value.timelinelabels || []).forEach(function (name) {
        (r.value.ranges || []).forEach(function (g) { (out[name] = out[name] || []).push([g.start, g.end]); });
      });
    });
    return out;
  }

  function problem() {
    var m = marks(), n = takeLength(), frames = {};
    var names = ["onset", "apex", "offset"];
    for (var i = 0; i < names.length; i++) {
      var name = names[i], got = m[name] || [];
      if (name !== "offset" && got.length === 0) return "no " + name + " mark yet: step to its frame and press " + (name === "onset" ? "O" : "A");
      if (got.length > 1) return got.length + " " + name + " marks: keep one (press " + name[0].toUpperCase() + " again on the right frame)";
      if (!got.length) continue;
      if (got[0][0] !== got[0][1]) return "the " + name + " mark spans frames " + got[0][0] + "-" + got[0][1] + ": mark one frame";
      if (n && (got[0][0] < 1 || got[0][0] > n)) return "the " + name + " mark is at frame " + got[0][0] + ", outside this take's frames 1-" + n;
      frames[name] = got[0][0];
    }
    if (frames.onset > frames.apex) return "onset (frame " + frames.onset + ") comes after apex (frame " + frames.apex + ")";
    if (frames.offset !== undefined && frames.offset < frames.apex) return "offset (frame " + frames.offset + ") comes before apex (frame " + frames.apex + ")";
    return null;
  }

  function clickButton(labels) {
    for (var i = 0; i < labels.length; i++) {
      var b = document.querySelector('button[aria-label="' + labels[i] + '"]');
      if (b && !b.disabled) { b.click(); return true; }
    }
    return false;
  }

  function step(delta) {
    whenSettled(function () { stepNow(delta); });
  }

  function stepNow(delta) {
    fixHopSize();
    var v = video(), k = currentFrame(), n = takeLength();
    if (!v || k === null) return;
    var target = Math.min(Math.max(k + delta, 1), n || v.length);
    if (target === k) return;
    if (!clickButton(delta > 0 ? ["Step forward"] : ["Step backward"])) v.setFrame(target);
  }

  function mark(name) {
    whenSettled(function () { markNow(name); });
  }

  function markNow(name) {
    var v = video(), ctl = marksControl(), a = annotation();
    if (!v || !ctl || !a || (a.isReadOnly && a.isReadOnly())) return;
    var k = currentFrame(), n = takeLength();
    if (k === null || (n && (k < 1 || k > n))) { show("frame " + k + " is outside this take (1-" + n + "): not marked"); return; }
    a.regions.filter(function (r) {
      return r.type === "timelineregion" && (r.labels || []).indexOf(name) >= 0;
    }).forEach(function (r) { r.deleteRegion(); });
    var label = (ctl.children || []).filter(function (l) { return l.value === name; })[0];
    if (!label) return;
    if (ctl.unselectAll) ctl.unselectAll();
    label.setSelected(true);
    try {
      v.startDrawing({ frame: k });
      v.finishDrawing({ mode: "new" });
    } finally {
      label.setSelected(false);
      if (a.unselectAll) a.unselectAll();
    }
    refresh();
  }

  function zoomMenu(item, times) {
    /* Label Studio's own zoom menu (the button after "Video settings"): "Zoom In" adds 0.1 to the zoom */
    var all = Array.prototype.slice.call(document.querySelectorAll("button"));
    var i = all.indexOf(document.querySelector('button[aria-label="Video settings"]'));
    var trigger = i >= 0 ? all[i + 1] : null;
    if (!trigger) return false;
    trigger.click();
    var entry = Array.prototype.slice.call(document.querySelectorAll("li, [role=menuitem], .lsf-menu__item, div"))
      .filter(function (el) { return el.children.length === 0 && el.textContent.trim() === item; })[0];
    if (entry) for (var k = 0; k < times; k++) entry.click();
    trigger.click();
    return !!entry;
  }

  function zoom(delta) {
    zoomMenu(delta > 0 ? "Zoom In" : "Zoom Out", 3);
  }

  var fitted = false;
  function fitVideo() {
    /* Label Studio never scales a video above its own size (zoom = min(1, fit)): enlarge it to fill the box */
    if (fitted) return;
    var v = document.querySelector("video"), box = document.querySelector(".lsf-video__main");
    if (!v || !box || !v.videoHeight || v.readyState < 2) return;
    var r = box.getBoundingClientRect();
    var fit = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
    var clicks = Math.floor((fit - Math.min(1, fit)) / 0.1 + 1e-6);
    fitted = clicks <= 0 || zoomMenu("Zoom In", clicks);
  }

  function playPause() {
    clickButton(["Play", "Pause"]);
  }

  function show(text) {
    var el = document.getElementById("mvfer-problem");
    if (el) el.textContent = text || "";
  }

  function button(id, text, title, fn) {
    var b = document.createElement("button");
    b.id = id; b.type = "button"; b.textContent = text; b.title = title;
    b.addEventListener("click", function (ev) { ev.preventDefault(); fn(); });
    return b;
  }

  function ensureBar() {
    if (document.getElementById("mvfer-bar") || !video()) return;
    var bar = document.createElement("div");
    bar.id = "mvfer-bar";
    bar.appendChild(button("mvfer-prev", "\u25C0 frame", "previous frame (ArrowLeft)", function () { step(-1); }));
    bar.appendChild(button("mvfer-next", "frame \u25B6", "next frame (ArrowRight)", function () { step(1); }));
    bar.appendChild(button("mvfer-onset", "O onset", "mark the frame shown as onset (key O)", function () { mark("onset"); }));
    bar.appendChild(button("mvfer-apex", "A apex", "mark the frame shown as apex (key A)", function () { mark("apex"); }));
    bar.appendChild(button("mvfer-offset", "E offset", "mark the frame shown as offset, optional (key E)", function () { mark("offset"); }));
    bar.appendChild(button("mvfer-zoom-in", "Z +", "enlarge the face (key Z)", function () { zoom(1); }));
    bar.appendChild(button("mvfer-zoom-out", "X \u2212", "shrink the face (key X)", function () { zoom(-1); }));
    var status = document.createElement("span"); status.id = "mvfer-status"; bar.appendChild(status);
    var prob = document.createElement("span"); prob.id = "mvfer-problem"; bar.appendChild(prob);
    document.body.appendChild(bar);
  }

  function refresh() {
    ensureBar();
    fixHopSize();
    fitVideo();
    var st = document.getElementById("mvfer-status");
    if (!st) return;
    var m = marks(), k = currentFrame(), n = takeLength();
    var f = function (name) { return m[name] ? m[name].map(function (g) { return g[0]; }).join("+") : "\u2014"; };
    st.textContent = "frame " + (k === null ? "\u2026" : k) + " of " + n + " \u00B7 onset " + f("onset") + " \u00B7 apex " + f("apex") + (m.offset ? " \u00B7 offset " + f("offset") : "");
    var p = problem();
    var bad = p && p.indexOf("outside") >= 0;
    document.body.classList.toggle("mvfer-bad-mark", !!bad);
    if (p && document.body.classList.contains("mvfer-tried-submit")) show("Not submitted: " + p);
    else if (bad) show(p);
    else if (!p) show("");
  }

  function guardSubmit(ev) {
    var p = problem();
    if (!p) return;
    ev.preventDefault();
    ev.stopPropagation();
    ev.stopImmediatePropagation();
    document.body.classList.add("mvfer-tried-submit");
    show("Not submitted: " + p);
  }

  window.addEventListener("click", function (ev) {
    var b = ev.target && ev.target.closest && ev.target.closest("button");
    if (!b) return;
    var label = (b.getAttribute("aria-label") || "") + " " + (b.textContent || "");
    if (/submit|update/i.test(label) && !/skip/i.test(label)) guardSubmit(ev);
  }, true);

  window.addEventListener("keydown", function (ev) {
    if (typing(ev.target) || !video()) return;
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { guardSubmit(ev); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var handled = true;
    if (ev.key === "ArrowRight") step(1);
    else if (ev.key === "ArrowLeft") step(-1);
    else if (ev.key === " ") playPause();
    else if (KEYS[ev.key.toLowerCase()]) mark(KEYS[ev.key.toLowerCase()]);
    else if (ev.key.toLowerCase() === "z") zoom(1);
    else if (ev.key.toLowerCase() === "x") zoom(-1);
    else handled = false;
    if (handled) { ev.preventDefault(); ev.stopPropagation(); ev.stopImmediatePropagation(); }
  }, true);

  window.mvfer = { step: step, mark: mark, marks: marks, problem: problem, currentFrame: currentFrame, takeLength: takeLength, zoom: zoom };
  setInterval(refresh, 250);
})();
