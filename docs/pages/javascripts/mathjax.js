// MathJax 3 configuration for pymdownx.arithmatex (generic mode) and for the rendered notebooks.
// MathJax searches the whole page (skipping code, pre and class "tex2jax_ignore"):
// arithmatex wraps TeX as \( ... \) and \[ ... \]; notebook Markdown cells keep their $ ... $ and $$ ... $$.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
  },
};

// Material's instant navigation swaps page content without a reload: typeset again each time.
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
