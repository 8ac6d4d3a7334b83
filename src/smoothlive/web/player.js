/* smoothlive player page: dash.js (+ its MSS plugin) or hls.js, no framework.
 *
 * Query: ?url=<manifest URL>&type=mss|dash|hls&time=<timing URL>&debug=1
 * - type defaults from the URL (see guessType);
 * - time defaults to <page origin>/time (smoothlive's serve_time): dash.js
 *   syncs its clock there and nowhere else (its default is an outside server).
 * The vendored players are loaded from vendor/, next to this page.
 *
 * window.smoothlivePlayer.state() is what the browser tests poll.
 */
(function () {
  "use strict";

  var params = new URLSearchParams(window.location.search);
  var url = params.get("url") || "";
  var type = (params.get("type") || guessType(url)).toLowerCase();
  var timeUrl = params.get("time") || window.location.origin + "/time";
  var video = document.getElementById("video");
  var errors = [];
  var warnings = [];
  var dash = null; // dashjs MediaPlayer
  var hls = null; // Hls instance
  var started = Date.now();

  function guessType(u) {
    var s = u.toLowerCase();
    var path = s.split("?")[0];
    if (s.indexOf("format=m3u8") >= 0 || /\.m3u8$/.test(path)) return "hls";
    if (s.indexOf("format=mpd") >= 0 || /\.mpd$/.test(path)) return "dash";
    if (/\/manifest(\(.*\))?$/.test(path)) return "mss";
    return "mss"; // dash.js with the MSS plugin reads both Smooth and DASH
  }

  function stamp() {
    return ((Date.now() - started) / 1000).toFixed(1) + "s";
  }

  function fail(message) {
    errors.push(stamp() + " " + message);
    showErrors();
  }

  function warn(message) {
    warnings.push(stamp() + " " + message);
    if (warnings.length > 200) warnings.shift();
  }

  function showErrors() {
    document.getElementById("errors").textContent = errors.join("\n");
  }

  function text(id, value) {
    var el = document.getElementById(id);
    if (el.textContent !== value) el.textContent = value;
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var el = document.createElement("script");
      el.src = src;
      el.async = false;
      el.onload = function () { resolve(); };
      el.onerror = function () { reject(new Error("could not load " + src + " (run `make web`)")); };
      document.head.appendChild(el);
    });
  }

  function errorText(e) {
    if (!e) return "unknown error";
    if (typeof e === "string") return e;
    var parts = [];
    if (e.code !== undefined) parts.push("code " + e.code);
    if (e.message) parts.push(e.message);
    return parts.join(": ") || String(e);
  }

  // ---- dash.js (DASH, and Smooth through the MSS plugin) ----
  function startDash(withMss) {
    var scripts = [loadScript("vendor/dash.all.min.js")];
    if (withMss) {
      // Must run after dash.all: it adds MssHandler to the existing window.dashjs.
      scripts.push(loadScript("vendor/dash.mss.min.js"));
    }
    return Promise.all(scripts).then(function () {
      var dashjs = window.dashjs;
      if (withMss && typeof dashjs.MssHandler !== "function") {
        throw new Error("dash.js MSS plugin did not register (dashjs.MssHandler missing)");
      }
      dash = dashjs.MediaPlayer().create();
      dash.updateSettings({
        debug: { logLevel: params.get("debug") ? dashjs.Debug.LOG_LEVEL_DEBUG
          : dashjs.Debug.LOG_LEVEL_WARNING },
        streaming: {
          // Our clock only: no Date header fallback, no outside time server.
          utcSynchronization: {
            enabled: true,
            useManifestDateHeaderTimeSource: false,
            defaultTimingSource: { scheme: "urn:mpeg:dash:utc:http-iso:2014", value: timeUrl }
          },
          // Nothing that reports anywhere.
          cmcd: { enabled: false, applyParametersFromMpd: false },
          cmsd: { enabled: false }
        }
      });
      var events = dashjs.MediaPlayer.events;
      dash.on(events.ERROR, function (e) {
        fail("dash.js error " + errorText(e.error));
      });
      if (events.PLAYBACK_ERROR) {
        dash.on(events.PLAYBACK_ERROR, function (e) {
          fail("dash.js playback error " + errorText(e.error));
        });
      }
      if (events.PLAYBACK_NOT_ALLOWED) {
        dash.on(events.PLAYBACK_NOT_ALLOWED, function () {
          warn("autoplay not allowed: press play");
        });
      }
      dash.initialize(video, url, true);
    });
  }

  // ---- hls.js ----
  function startHls() {
    return loadScript("vendor/hls.min.js").then(function () {
      var Hls = window.Hls;
      if (!Hls.isSupported()) {
        throw new Error("hls.js: Media Source Extensions are not supported here");
      }
      hls = new Hls({ enableWorker: true, debug: !!params.get("debug") });
      hls.on(Hls.Events.ERROR, function (event, data) {
        var message = "hls.js " + data.type + " " + data.details +
          (data.response && data.response.code ? " (HTTP " + data.response.code + ")" : "") +
          (data.error && data.error.message ? ": " + data.error.message : "");
        if (data.fatal) fail(message); else warn(message);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      hls.on(Hls.Events.MANIFEST_PARSED, function () {
        var p = video.play();
        if (p && p.catch) p.catch(function (e) { warn("autoplay: " + errorText(e)); });
      });
    });
  }

  // ---- what the page shows and the tests read ----
  // Seconds behind the live edge (null unless live). For dash.js: the end of
  // the DVR window (the newest media it knows of) minus the current time, in
  // media time. Not getCurrentLiveLatency(): that counts from the manifest's
  // availabilityStartTime, which the MSS plugin sets to 1970 for live Smooth,
  // so it is only wall-clock latency when fragment times are epoch-based.
  function latency() {
    try {
      if (dash && dash.isDynamic()) {
        var dvr = dash.getDvrWindow();
        return dvr && isFinite(dvr.end) ? Math.max(0, dvr.end - video.currentTime) : null;
      }
      if (hls && hls.levels && hls.currentLevel >= 0) {
        var details = hls.levels[hls.currentLevel].details;
        if (details && details.live) return hls.latency;
      }
    } catch (e) { /* not ready yet */ }
    return null;
  }

  function bitrate() {
    try {
      if (dash) {
        var rep = dash.getCurrentRepresentationForType("video");
        return rep ? rep.bandwidth : null;
      }
      if (hls && hls.currentLevel >= 0) return hls.levels[hls.currentLevel].bitrate;
    } catch (e) { /* not ready yet */ }
    return null;
  }

  function isLive() {
    try {
      if (dash) return dash.isDynamic();
      if (hls && hls.currentLevel >= 0) {
        var details = hls.levels[hls.currentLevel].details;
        return !!(details && details.live);
      }
    } catch (e) { /* not ready yet */ }
    return null;
  }

  function state() {
    var q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
    return {
      url: url,
      type: type,
      timeUrl: timeUrl,
      currentTime: video.currentTime,
      totalVideoFrames: q.totalVideoFrames || 0,
      droppedVideoFrames: q.droppedVideoFrames || 0,
      errors: errors.slice(),
      warnings: warnings.slice(),
      playing: !video.paused && !video.ended && video.readyState >= 3,
      paused: video.paused,
      readyState: video.readyState,
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      live: isLive(),
      latency: latency(),
      bitrate: bitrate()
    };
  }

  function render() {
    var s = state();
    text("status", s.playing ? "playing" : (s.paused ? "paused" : "waiting") +
      " (readyState " + s.readyState + ")");
    text("time", s.currentTime.toFixed(2) + " s");
    text("latency", s.latency === null || isNaN(s.latency) ? "–" : s.latency.toFixed(2) + " s");
    text("bitrate", s.bitrate ? Math.round(s.bitrate / 1000) + " kbit/s" : "–");
    text("resolution", s.videoWidth ? s.videoWidth + "×" + s.videoHeight : "–");
    text("frames", s.totalVideoFrames + " decoded, " + s.droppedVideoFrames + " dropped");
  }

  window.smoothlivePlayer = {
    state: state,
    get player() { return dash || hls; }
  };

  window.addEventListener("error", function (e) {
    fail("page error: " + (e.message || e.type));
  });
  window.addEventListener("unhandledrejection", function (e) {
    fail("page error: " + errorText(e.reason));
  });
  video.addEventListener("error", function () {
    fail("video element error " + errorText(video.error));
  });

  document.getElementById("url").value = url;
  document.getElementById("type").value = params.get("type") || "";
  if (params.get("time")) {
    var hidden = document.createElement("input");
    hidden.type = "hidden";
    hidden.name = "time";
    hidden.value = params.get("time");
    document.getElementById("open").appendChild(hidden);
  }
  text("stream", url || "none: give a manifest URL above");
  text("player", { mss: "dash.js + MSS plugin", dash: "dash.js", hls: "hls.js" }[type] ||
    "unknown type " + type);
  setInterval(render, 250);

  if (!url) return;
  var start;
  if (type === "mss") start = startDash(true);
  else if (type === "dash") start = startDash(false);
  else if (type === "hls") start = startHls();
  else start = Promise.reject(new Error("unknown type " + type + " (mss, dash or hls)"));
  start.catch(function (e) { fail(errorText(e)); });
})();
