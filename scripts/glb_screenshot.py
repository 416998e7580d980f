"""Open ``mesh.glb`` files in a glTF viewer (three.js) under headless Chromium and screenshot them.

A check of the GLB outside this toolkit's own renderer: three.js's
``GLTFLoader`` reads the file as any glTF viewer does (PBR
``MeshStandardMaterial``: base colour = the albedo maps, metallic 0), and the
page shows each mesh from the front, at 45 degrees and in profile under a
hemisphere and a key light. Needs ``chromium`` on the PATH (Debian:
``apt-get install chromium``) and the ``three`` npm package
(``npm install three`` in ``--three_dir``); neither is a dependency of the
toolkit.

Usage::

    python scripts/glb_screenshot.py OUT/face/mesh.glb [more.glb ...] --three_dir DIR/node_modules/three \\
        --output glb_views.png
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><style>body{margin:0;background:#808080}</style>
<script type="importmap">{"imports": {"three": "./three/build/three.module.js",
  "three/addons/": "./three/examples/jsm/"}}</script></head>
<body><script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
const files = FILES, views = [0, 45, 90], size = SIZE;
const renderer = new THREE.WebGLRenderer({antialias: true, preserveDrawingBuffer: true});
renderer.setSize(size * views.length, size * files.length);
renderer.setScissorTest(true);
renderer.outputColorSpace = THREE.SRGBColorSpace;
document.body.appendChild(renderer.domElement);
const loader = new GLTFLoader();
const scenes = await Promise.all(files.map(f => loader.loadAsync(f)));
scenes.forEach((gltf, row) => {
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0x808080);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x404040, 1.5));
  const key = new THREE.DirectionalLight(0xffffff, 1.5);
  key.position.set(1, 1, 2);
  scene.add(key);
  scene.add(gltf.scene);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const centre = box.getCenter(new THREE.Vector3()), radius = box.getSize(new THREE.Vector3()).length() / 2;
  views.forEach((yaw, col) => {
    const camera = new THREE.PerspectiveCamera(30, 1, radius / 10, radius * 10);
    const a = yaw * Math.PI / 180;
    camera.position.set(centre.x + 2.2 * radius * Math.sin(a), centre.y, centre.z + 2.2 * radius * Math.cos(a));
    camera.lookAt(centre);
    key.position.copy(camera.position).add(new THREE.Vector3(0, radius, 0));
    const y = (files.length - 1 - row) * size;
    renderer.setViewport(col * size, y, size, size);
    renderer.setScissor(col * size, y, size, size);
    renderer.render(scene, camera);
  });
});
document.title = "rendered";
</script></body></html>
"""


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("glb", nargs="+", help="mesh.glb files (one row each)")
    parser.add_argument("--three_dir", required=True, help="the three npm package (node_modules/three)")
    parser.add_argument("--output", required=True, help="the screenshot (PNG)")
    parser.add_argument("--size", type=int, default=360, help="pixels per view (default 360)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    three = Path(args.three_dir)
    if chromium is None:
        print("error: chromium not found on the PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    if not (three / "build" / "three.module.js").is_file():
        print(f"error: {three}: not the three npm package (no build/three.module.js)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "three").symlink_to(three.resolve())
        names = []
        for i, glb in enumerate(args.glb):
            shutil.copy(glb, root / f"mesh{i}.glb")
            names.append(f"mesh{i}.glb")
        page = PAGE.replace("FILES", json.dumps(names)).replace("SIZE", str(args.size))
        (root / "index.html").write_text(page)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        width, height = 3 * args.size, len(names) * args.size
        try:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--use-angle=swiftshader",
                            "--enable-unsafe-swiftshader", "--hide-scrollbars", "--virtual-time-budget=30000",
                            f"--window-size={width},{height}", f"--screenshot={Path(args.output).resolve()}",
                            f"http://127.0.0.1:{server.server_address[1]}/index.html"],
                           check=True, capture_output=True, timeout=300)
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
