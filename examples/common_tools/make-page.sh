#!/bin/sh
# make-page.sh SIZE: a static HTML page of exactly SIZE bytes on stdout (the web server
# examples serve a 10 KB page, as Gramine's benchmark-http.sh fetches random/10K.1.html).
size=${1:-10240}
head='<!DOCTYPE html><html><head><title>pylos</title></head><body>'
tail='</body></html>'
printf '%s\n' "$head"
yes '<p>This page is served from inside a simulated SGX enclave by pylos.</p>' |
    head -c $((size - ${#head} - ${#tail} - 3))
printf '\n%s\n' "$tail"
