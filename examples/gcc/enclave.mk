# Run by make *inside* the enclave (`pylos run ./build`): two rules, gcc for both.
out/hello: out/hello.o
	gcc -o $@ $<

out/hello.o: hello.c
	which gcc cc
	gcc -c -o $@ $<
