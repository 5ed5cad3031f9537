<?php
// A POST form: Portico reads the body whole before PHP gets it (a slow upload never holds a PHP worker).
header('Cache-Control: no-store');
$name = $_POST['name'] ?? null;
?><!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A form</title><link rel="stylesheet" href="/style.css"></head>
<body>
<?php if ($name !== null): ?>
<p>Hello, <?= htmlspecialchars($name, ENT_QUOTES) ?> (a POST of <?= (int) $_SERVER['CONTENT_LENGTH'] ?> bytes).</p>
<?php endif ?>
<form method="post"><input name="name" placeholder="your name"> <button>Send</button></form>
<p><a href="/">back</a></p>
</body></html>
