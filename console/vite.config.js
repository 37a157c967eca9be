// Builds the console into crates/corral-api/console/ with fixed file names, which the binary
// embeds (include_str!) and serves at /console. `npm run build` after changing src/.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/console/",
  build: {
    outDir: "../crates/corral-api/console",
    emptyOutDir: true,
    assetsDir: "assets",
    modulePreload: false,
    rollupOptions: {
      output: {
        entryFileNames: "assets/console.js",
        chunkFileNames: "assets/console-[name].js",
        assetFileNames: "assets/console[extname]",
      },
    },
  },
});
