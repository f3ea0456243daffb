// Draw every chart of the program page from the figure JSON the server rendered.
(function () {
  "use strict";
  document.querySelectorAll("[data-figure]").forEach(function (el) {
    var source = document.getElementById(el.getAttribute("data-figure"));
    if (!source) { return; }
    var fig = JSON.parse(source.textContent);
    Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false });
  });
})();
