<?php
// Cached by Portico (the php route's cache: zone main): PHP runs at most once every 10 s for this page.
header('Cache-Control: public, max-age=10');
header('Content-Type: text/plain');
echo 'rendered by PHP at ' . date('H:i:s') . ' in ' . getenv('PORTICO_SLOT') . "\n";
