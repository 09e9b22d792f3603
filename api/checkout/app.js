// The checkout page's behaviour beyond plain HTML: copy buttons, the
// countdown, following the payment's status, and the redirect once it is
// complete. The page works without it (the token picker is a form).
(function () {
  "use strict";
  var root = document.getElementById("checkout");
  if (!root) return;
  var state = root.getAttribute("data-state");
  var query = root.getAttribute("data-query");
  var expires = parseInt(root.getAttribute("data-expires"), 10) * 1000;
  var redirect = root.getAttribute("data-redirect");

  Array.prototype.forEach.call(document.querySelectorAll("button.copy"), function (b) {
    b.addEventListener("click", function () {
      var text = b.getAttribute("data-copy");
      var done = function () {
        b.textContent = "Copied";
        b.classList.add("done");
        setTimeout(function () { b.textContent = "Copy"; b.classList.remove("done"); }, 1500);
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () {});
      }
    });
  });

  var countdown = document.getElementById("countdown");
  function tick() {
    if (!countdown) return;
    var left = Math.max(0, Math.floor((expires - Date.now()) / 1000));
    var s = left % 60;
    countdown.textContent = Math.floor(left / 60) + ":" + (s < 10 ? "0" : "") + s;
  }
  if (countdown) { tick(); setInterval(tick, 1000); }

  function go(to) {
    // Only absolute http(s) URLs were accepted at create time; check
    // again so nothing else can ever be navigated to.
    if (/^https?:\/\//i.test(to)) window.location.assign(to);
  }
  if (state === "completed" && redirect) {
    setTimeout(function () { go(redirect); }, 1500);
    return;
  }
  if (state !== "open" && state !== "processing") return;

  var delay = 2000;
  function poll() {
    fetch("/checkout/status?" + query, { cache: "no-store", credentials: "omit" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (s && s.state && s.state !== state) {
          window.location.reload();
          return;
        }
        delay = 2000;
        setTimeout(poll, delay);
      }, function () {
        delay = Math.min(delay * 2, 30000);
        setTimeout(poll, delay);
      });
  }
  setTimeout(poll, delay);
})();
