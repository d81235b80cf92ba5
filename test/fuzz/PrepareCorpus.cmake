# Gives the fuzz-smoke test a fresh copy of the seeds in WORK_DIR/corpus:
# libFuzzer writes the inputs it finds into its first corpus directory, and
# those belong in the build tree.
#   cmake -DSEED_DIR=dir -DEXAMPLES_DIR=dir -DWORK_DIR=dir -P PrepareCorpus.cmake
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/corpus)
foreach(dir ${SEED_DIR} ${EXAMPLES_DIR})
  file(GLOB seeds ${dir}/*.attn)
  file(COPY ${seeds} DESTINATION ${WORK_DIR}/corpus)
endforeach()
