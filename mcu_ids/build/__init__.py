"""Board registry, template rendering and the boards' toolchains."""
