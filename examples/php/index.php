<?php
// The showcase's PHP app (http://php.localhost:8080/), run by PHP-FPM pools that Portico starts itself
// (upstreams.php in examples/portico.yaml). This file is also the front controller: a path that is neither a
// file nor a script (/hello/world) runs it, with the path in REQUEST_URI, as WordPress and Laravel expect.
header('Cache-Control: no-store');
header('X-Served-By: ' . getenv('PORTICO_SLOT'));
$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
$e = fn ($text) => htmlspecialchars((string) $text, ENT_QUOTES);
?><!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PHP behind Portico</title><link rel="stylesheet" href="/style.css"></head>
<body>
<h1>PHP <?= $e(PHP_VERSION) ?>, through Portico over FastCGI</h1>
<p>Answered by PHP-FPM in slot <b><?= $e(getenv('PORTICO_SLOT')) ?></b> (reload: Portico balances across php#1 and php#2).</p>
<table>
  <tr><th>REQUEST_URI</th><td><?= $e($_SERVER['REQUEST_URI']) ?></td></tr>
  <tr><th>SCRIPT_NAME</th><td><?= $e($_SERVER['SCRIPT_NAME']) ?></td></tr>
  <tr><th>routed path</th><td><?= $e($path) ?><?= $path === '/' ? '' : ' (no such file: the front controller answered)' ?></td></tr>
  <tr><th>REMOTE_ADDR</th><td><?= $e($_SERVER['REMOTE_ADDR']) ?></td></tr>
  <tr><th>HTTPS</th><td><?= $e($_SERVER['HTTPS'] ?? 'off') ?></td></tr>
</table>
<ul>
  <li><a href="/hello/world">/hello/world</a>: a pretty URL, run by this front controller</li>
  <li><a href="/cached.php">/cached.php</a>: says <code>Cache-Control: public, max-age=10</code>; Portico caches it (Cache-Status)</li>
  <li><a href="/form.php">/form.php</a>: a POST form</li>
  <li><a href="/style.css">/style.css</a>: a static file, served by Portico itself, never by PHP</li>
  <li><a href="/uploads/avatar.jpg/x.php">/uploads/avatar.jpg/x.php</a>: the classic path-info hole: never runs the image</li>
</ul>
</body></html>
