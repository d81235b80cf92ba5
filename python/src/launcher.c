/* rbfc._launcher: the forward call's launch path in C.
 *
 * A call of an rbfc module on the GPU takes a few microseconds of kernel
 * launch; in Python, checking its signature, packing rbfc_forward_args and
 * calling the library through ctypes took 10-17 us more on the GPU machine.
 * This module does that work in C against Python's stable ABI (one build
 * serves every CPython >= 3.9) and torch's Python API only (no torch
 * headers: one wheel serves every torch). It links nothing: librbfc's
 * functions come as addresses from the ctypes handle the package already
 * holds (configure()).
 *
 *   Launch   a forward kernel and every field of a call's rbfc_forward_args
 *            but the data pointers, params and workspace (built by
 *            rbfc._ops.Kernel.forward_launch); launch(q, k, v, captures,
 *            params, block) allocates o (and the lse), fills in the pointers
 *            and runs rbfc_forward on the current stream.
 *   Calls    an Attention module's checked calls: signature() is what the
 *            argument checks read; a call of the module whose signature a
 *            checked call had runs its Launch from here (call()), skipping
 *            the checks. It answers None for anything it does not take
 *            (hooks, autograd, dispatch modes, tensor subclasses, a new
 *            signature, a param that is a tensor or unknown), and the module
 *            then takes its checked path (forward), which raises what is
 *            wrong. Under torch.compile the module does not call it: the
 *            compiler cannot trace into C.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rbfc/rbfc.h"

typedef rbfc_status (*ForwardFunction)(const rbfc_kernel *,
                                       const rbfc_forward_args *, void *);
typedef const char *(*LastErrorFunction)(void);

/* What configure() gives: librbfc's entry points and the torch functions a
 * call reads. */
static ForwardFunction forwardFunction;
static LastErrorFunction lastErrorFunction;
static PyObject *errorType;           /* rbfc.RbfcError */
static PyObject *tensorType;          /* torch.Tensor */
static PyObject *currentDispatchMode; /* _get_current_dispatch_mode */
static PyObject *isGradEnabled;       /* torch.is_grad_enabled */
static PyObject *currentDevice;       /* torch._C._cuda_getDevice */
static PyObject *currentRawStream;    /* torch._C._cuda_getCurrentRawStream */
static PyObject
    *isStreamCapturing;         /* torch._C._cuda_isCurrentStreamCapturing */
static PyObject *emptyLike;     /* torch.empty_like */
static PyObject *getNumThreads; /* torch.get_num_threads */
static PyObject *moduleGlobals; /* torch.nn.modules.module: its hooks */
static PyObject *contiguousKeywords; /* {"memory_format": contiguous_format} */
static PyObject *float32Keywords;    /* {"dtype": torch.float32} */

static PyObject *shapeName, *strideName, *dtypeName, *deviceName, *dataPtrName,
    *requiresGradName, *getDeviceName, *newEmptyName;

/* A Python call's result as a C truth value; -1 with an exception set. */
static int callTruth(PyObject *function) {
  PyObject *result = PyObject_CallObject(function, NULL);
  if (!result)
    return -1;
  int truth = PyObject_IsTrue(result);
  Py_DECREF(result);
  return truth;
}

static int attributeTruth(PyObject *object, PyObject *name) {
  PyObject *value = PyObject_GetAttr(object, name);
  if (!value)
    return -1;
  int truth = PyObject_IsTrue(value);
  Py_DECREF(value);
  return truth;
}

static void *dataPointer(PyObject *tensor) {
  PyObject *address = PyObject_CallMethodObjArgs(tensor, dataPtrName, NULL);
  if (!address)
    return NULL;
  void *pointer = PyLong_AsVoidPtr(address);
  Py_DECREF(address);
  return pointer;
}

/* An int-valued call's result: function() or object.name(); -1 with an
 * exception set (or for a result of -1). */
static long long longOf(PyObject *result) {
  if (!result)
    return -1;
  long long value = PyLong_AsLongLong(result);
  Py_DECREF(result);
  return value;
}

static long long callLong(PyObject *function) {
  return longOf(PyObject_CallObject(function, NULL));
}

static long long callMethodLong(PyObject *object, PyObject *name) {
  return longOf(PyObject_CallMethodObjArgs(object, name, NULL));
}

/* *slot = value, releasing what it held (Py_XSETREF outside the limited
 * API). */
static void replace(PyObject **slot, PyObject *value) {
  PyObject *old = *slot;
  *slot = value;
  Py_XDECREF(old);
}

static int isExactTensor(PyObject *object) {
  return (PyObject *)Py_TYPE(object) == tensorType;
}

/* ------------------------------------------------------------------ */
/* Launch                                                               */

/* PyObject_HEAD brings its own semicolon, which clang-format misreads. */
/* clang-format off */
typedef struct {
  PyObject_HEAD
  PyObject *kernel; /* rbfc._ops.Kernel: owns the handle, and its
                       workspace(bytes, device, stream) */
  const rbfc_kernel *handle;
  rbfc_forward_args args; /* every field but the pointers of a call */
  rbfc_tensor *captures;  /* num_captures fields, data filled per call */
  double *defaults;       /* every param's default (0 where it has none) */
  PyObject *lseShape;     /* a tuple when the call returns the lse */
  int cuda;
  int threadsPerCall; /* host: torch.get_num_threads() at each call */
  int fixedThreads;   /* host, else: the compile's num_threads */
  int capturesRequireGrad;
  /* The workspace of the last stream this launch ran on outside a graph
   * capture (the kernel keeps one per stream). */
  PyObject *workspace;
  void *workspaceStream;
  void *workspaceData;
} Launch;
/* clang-format on */

static void Launch_dealloc(Launch *self) {
  Py_XDECREF(self->kernel);
  Py_XDECREF(self->lseShape);
  Py_XDECREF(self->workspace);
  PyMem_Free(self->captures);
  PyMem_Free(self->defaults);
  PyTypeObject *type = Py_TYPE(self);
  freefunc free = (freefunc)PyType_GetSlot(type, Py_tp_free);
  free(self);
  Py_DECREF(type);
}

/* Launch(kernel, handle, args, captures, defaults, lse_shape, cuda,
 *        threads, captures_require_grad): `args` the bytes of an
 * rbfc_forward_args, `captures` of num_captures rbfc_tensors, `defaults` of
 * num_params doubles; lse_shape None or a tuple; threads the host
 * kernel's num_threads, None for torch.get_num_threads() at each call. */
static PyObject *Launch_new(PyTypeObject *type, PyObject *positional,
                            PyObject *keywords) {
  PyObject *kernel, *handle, *lseShape, *argsBytes, *capturesBytes,
      *defaultsBytes, *threads;
  int cuda, capturesRequireGrad;
  if (keywords && PyDict_Size(keywords)) {
    PyErr_SetString(PyExc_TypeError, "Launch takes no keyword arguments");
    return NULL;
  }
  if (!forwardFunction) {
    PyErr_SetString(PyExc_RuntimeError, "Launch before configure()");
    return NULL;
  }
  if (!PyArg_ParseTuple(positional, "OOSSSOpOp", &kernel, &handle, &argsBytes,
                        &capturesBytes, &defaultsBytes, &lseShape, &cuda,
                        &threads, &capturesRequireGrad))
    return NULL;
  struct {
    const char *buf;
    Py_ssize_t len;
  } args = {PyBytes_AsString(argsBytes), PyBytes_Size(argsBytes)},
    captures = {PyBytes_AsString(capturesBytes), PyBytes_Size(capturesBytes)},
    defaults = {PyBytes_AsString(defaultsBytes), PyBytes_Size(defaultsBytes)};
  Launch *self = NULL;
  const char *problem = NULL;
  if (args.len != (Py_ssize_t)sizeof(rbfc_forward_args))
    problem = "args: not an rbfc_forward_args";
  else if (captures.len % (Py_ssize_t)sizeof(rbfc_tensor) ||
           defaults.len % (Py_ssize_t)sizeof(double))
    problem = "captures or defaults: not whole records";
  else if (lseShape != Py_None && !PyTuple_Check(lseShape))
    problem = "lse_shape: expected None or a tuple";
  if (problem) {
    PyErr_SetString(PyExc_ValueError, problem);
    return NULL;
  }
  const rbfc_forward_args *template = (const rbfc_forward_args *)args.buf;
  if (template->num_captures !=
          (size_t)(captures.len / (Py_ssize_t)sizeof(rbfc_tensor)) ||
      template->num_params !=
          (size_t)(defaults.len / (Py_ssize_t)sizeof(double))) {
    PyErr_SetString(PyExc_ValueError,
                    "args: num_captures or num_params differ from the arrays");
    return NULL;
  }
  self = (Launch *)((allocfunc)PyType_GetSlot(type, Py_tp_alloc))(type, 0);
  if (!self)
    return NULL;
  self->handle = PyLong_AsVoidPtr(handle);
  if (PyErr_Occurred()) {
    Py_DECREF(self);
    return NULL;
  }
  memcpy(&self->args, template, sizeof self->args);
  self->captures = PyMem_Malloc(captures.len ? captures.len : 1);
  self->defaults = PyMem_Malloc(defaults.len ? defaults.len : 1);
  if (!self->captures || !self->defaults) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  memcpy(self->captures, captures.buf, captures.len);
  memcpy(self->defaults, defaults.buf, defaults.len);
  Py_INCREF(kernel);
  self->kernel = kernel;
  if (lseShape != Py_None) {
    Py_INCREF(lseShape);
    self->lseShape = lseShape;
  }
  self->cuda = cuda;
  self->threadsPerCall = threads == Py_None;
  if (!self->threadsPerCall) {
    self->fixedThreads = (int)PyLong_AsLong(threads);
    if (PyErr_Occurred()) {
      Py_DECREF(self);
      return NULL;
    }
  }
  self->capturesRequireGrad = capturesRequireGrad;
  return (PyObject *)self;
}

/* The device workspace of a call on `stream`; sets *data. A new reference
 * (to keep until the launch), or NULL with an exception set. */
static PyObject *workspaceFor(Launch *self, PyObject *q, void *stream,
                              void **data) {
  int capturing = callTruth(isStreamCapturing);
  if (capturing < 0)
    return NULL;
  if (!capturing && self->workspace && self->workspaceStream == stream) {
    *data = self->workspaceData;
    Py_INCREF(self->workspace);
    return self->workspace;
  }
  PyObject *device = PyObject_GetAttr(q, deviceName);
  if (!device)
    return NULL;
  PyObject *streamValue = PyLong_FromVoidPtr(stream);
  PyObject *workspace =
      streamValue ? PyObject_CallMethod(self->kernel, "workspace", "nOO",
                                        (Py_ssize_t)self->args.workspace_bytes,
                                        device, streamValue)
                  : NULL;
  Py_DECREF(device);
  Py_XDECREF(streamValue);
  if (!workspace)
    return NULL;
  *data = dataPointer(workspace);
  if (PyErr_Occurred()) {
    Py_DECREF(workspace);
    return NULL;
  }
  /* Under a capture each call has its own, which the graph keeps. */
  if (!capturing) {
    replace(&self->workspace, workspace);
    Py_INCREF(workspace);
    self->workspaceStream = stream;
    self->workspaceData = *data;
  }
  return workspace;
}

static int readBlock(PyObject *block, rbfc_forward_args *args) {
  int64_t values[4];
  if (PySequence_Size(block) != 4) {
    PyErr_Clear();
    PyErr_SetString(PyExc_ValueError, "block: expected 4 ints");
    return -1;
  }
  for (Py_ssize_t i = 0; i < 4; ++i) {
    PyObject *value = PySequence_GetItem(block, i);
    if (!value)
      return -1;
    values[i] = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (PyErr_Occurred())
      return -1;
  }
  args->q_offset = values[0];
  args->kv_offset = values[1];
  args->q_seq_len = values[2];
  args->kv_seq_len = values[3];
  return 0;
}

/* The call itself: `params` NULL for the defaults, else num_params values;
 * `captures` a sequence of tensors in declaration order; `device` q's CUDA
 * device, which is current. (o, lse or None), or NULL with an exception
 * set. */
static PyObject *runLaunch(Launch *self, PyObject *q, PyObject *k, PyObject *v,
                           PyObject *captures, const double *params,
                           PyObject *block, long long device) {
  rbfc_forward_args args = self->args;
  enum { InlineCaptures = 8 };
  rbfc_tensor inlineCaptures[InlineCaptures];
  rbfc_tensor *captureViews = inlineCaptures;
  PyObject *o = NULL, *lse = NULL, *workspace = NULL, *result = NULL;
  if (block != Py_None && readBlock(block, &args) < 0)
    return NULL;
  size_t numCaptures = args.num_captures;
  if (numCaptures > InlineCaptures &&
      !(captureViews = PyMem_Malloc(numCaptures * sizeof(rbfc_tensor))))
    return PyErr_NoMemory();
  if (PySequence_Size(captures) != (Py_ssize_t)numCaptures) {
    PyErr_SetString(PyExc_ValueError, "captures: not one per declared capture");
    goto done;
  }
  for (size_t i = 0; i < numCaptures; ++i) {
    PyObject *capture = PySequence_GetItem(captures, (Py_ssize_t)i);
    if (!capture)
      goto done;
    captureViews[i] = self->captures[i];
    captureViews[i].data = dataPointer(capture);
    Py_DECREF(capture);
    if (PyErr_Occurred())
      goto done;
  }
  args.captures = numCaptures ? captureViews : NULL;
  args.params = params ? params : self->defaults;
  if (!args.num_params)
    args.params = NULL;

  PyObject *likeArgs = PyTuple_Pack(1, q);
  if (!likeArgs)
    goto done;
  o = PyObject_Call(emptyLike, likeArgs, contiguousKeywords);
  Py_DECREF(likeArgs);
  if (!o)
    goto done;
  if (self->lseShape) {
    PyObject *newEmpty = PyObject_GetAttr(q, newEmptyName);
    PyObject *shapeArgs = newEmpty ? PyTuple_Pack(1, self->lseShape) : NULL;
    lse =
        shapeArgs ? PyObject_Call(newEmpty, shapeArgs, float32Keywords) : NULL;
    Py_XDECREF(newEmpty);
    Py_XDECREF(shapeArgs);
    if (!lse)
      goto done;
    args.lse.data = dataPointer(lse);
  }
  args.q.data = dataPointer(q);
  args.k.data = dataPointer(k);
  args.v.data = dataPointer(v);
  args.o.data = dataPointer(o);
  if (PyErr_Occurred())
    goto done;

  void *stream = NULL;
  if (self->cuda) {
    PyObject *deviceValue = PyLong_FromLongLong(device);
    PyObject *raw =
        deviceValue
            ? PyObject_CallFunctionObjArgs(currentRawStream, deviceValue, NULL)
            : NULL;
    Py_XDECREF(deviceValue);
    if (!raw)
      goto done;
    stream = PyLong_AsVoidPtr(raw);
    Py_DECREF(raw);
    if (PyErr_Occurred())
      goto done;
    if (args.workspace_bytes &&
        !(workspace = workspaceFor(self, q, stream, &args.workspace)))
      goto done;
  } else {
    args.num_threads = self->fixedThreads;
    if (self->threadsPerCall) {
      long long threads = callLong(getNumThreads);
      if (threads < 0 && PyErr_Occurred())
        goto done;
      args.num_threads = (int32_t)threads;
    }
  }

  PyThreadState *waiting = PyEval_SaveThread();
  rbfc_status status = forwardFunction(self->handle, &args, stream);
  PyEval_RestoreThread(waiting);
  if (status != RBFC_OK) {
    PyObject *error = PyObject_CallFunction(errorType, "si",
                                            lastErrorFunction(), (int)status);
    if (error) {
      PyErr_SetObject(errorType, error);
      Py_DECREF(error);
    }
    goto done;
  }
  result = PyTuple_Pack(2, o, lse ? lse : Py_None);
done:
  if (captureViews != inlineCaptures)
    PyMem_Free(captureViews);
  Py_XDECREF(o);
  Py_XDECREF(lse);
  Py_XDECREF(workspace);
  return result;
}

/* launch(q, k, v, captures, params, block): params None for the defaults or
 * a sequence of every param's value in declaration order; block None or
 * (q_offset, kv_offset, q_seq_len, kv_seq_len). The caller makes q's
 * device current. Returns (o, lse or None). */
static PyObject *Launch_launch(Launch *self, PyObject *positional) {
  PyObject *q, *k, *v, *captures, *params, *block;
  if (!PyArg_ParseTuple(positional, "OOOOOO", &q, &k, &v, &captures, &params,
                        &block))
    return NULL;
  long long device = 0;
  if (self->cuda) {
    device = callMethodLong(q, getDeviceName);
    if (device < 0) {
      if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "q: not a CUDA tensor");
      return NULL;
    }
  }
  if (params == Py_None)
    return runLaunch(self, q, k, v, captures, NULL, block, device);
  size_t count = self->args.num_params;
  if (PySequence_Size(params) != (Py_ssize_t)count) {
    PyErr_SetString(PyExc_ValueError, "params: not one per declared param");
    return NULL;
  }
  double *values = PyMem_Malloc(count ? count * sizeof(double) : 1);
  if (!values)
    return PyErr_NoMemory();
  for (size_t i = 0; i < count; ++i) {
    PyObject *value = PySequence_GetItem(params, (Py_ssize_t)i);
    values[i] = value ? PyFloat_AsDouble(value) : -1.0;
    Py_XDECREF(value);
    if (PyErr_Occurred()) {
      PyMem_Free(values);
      return NULL;
    }
  }
  PyObject *result = runLaunch(self, q, k, v, captures, values, block, device);
  PyMem_Free(values);
  return result;
}

static PyObject *Launch_cuda(Launch *self, void *closure) {
  (void)closure;
  return PyBool_FromLong(self->cuda);
}

static PyObject *Launch_kernel(Launch *self, void *closure) {
  (void)closure;
  Py_INCREF(self->kernel);
  return self->kernel;
}

static PyMethodDef launchMethods[] = {
    {"launch", (PyCFunction)Launch_launch, METH_VARARGS,
     "launch(q, k, v, captures, params, block) -> (o, lse or None)"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef launchProperties[] = {
    {"cuda", (getter)Launch_cuda, NULL, "whether the kernel runs on CUDA",
     NULL},
    {"kernel", (getter)Launch_kernel, NULL, "the rbfc._ops.Kernel", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot launchSlots[] = {
    {Py_tp_new, Launch_new},
    {Py_tp_dealloc, Launch_dealloc},
    {Py_tp_methods, launchMethods},
    {Py_tp_getset, launchProperties},
    {Py_tp_doc, "A forward kernel with a call's rbfc_forward_args but for "
                "its data (see the module's documentation)."},
    {0, NULL}};

static PyType_Spec launchSpec = {"rbfc._launcher.Launch", sizeof(Launch), 0,
                                 Py_TPFLAGS_DEFAULT, launchSlots};
static PyObject *launchType;

/* ------------------------------------------------------------------ */
/* Calls                                                                */

/* clang-format off */
typedef struct {
  PyObject_HEAD
  PyObject *captureNames; /* tuple of the spec's captures, declared order */
  PyObject *paramSlots;   /* {name: slot} */
  Py_ssize_t numParams;
  unsigned char *intParam;      /* per slot: an i32 param */
  unsigned char *requiredParam; /* per slot: a param without a default */
  PyObject *launches;     /* {signature: Launch} */
  Py_ssize_t maxLaunches;
  int returnLse; /* return_lse's default */
} Calls;
/* clang-format on */

static void Calls_dealloc(Calls *self) {
  Py_XDECREF(self->captureNames);
  Py_XDECREF(self->paramSlots);
  PyMem_Free(self->intParam);
  PyMem_Free(self->requiredParam);
  Py_XDECREF(self->launches);
  PyTypeObject *type = Py_TYPE(self);
  ((freefunc)PyType_GetSlot(type, Py_tp_free))(self);
  Py_DECREF(type);
}

/* Calls(capture_names, params, max_launches, return_lse): params
 * {name: (slot, is_int, has_default)} in the spec's declaration order. */
static PyObject *Calls_new(PyTypeObject *type, PyObject *positional,
                           PyObject *keywords) {
  PyObject *captureNames, *params;
  Py_ssize_t maxLaunches;
  int returnLse;
  if (keywords && PyDict_Size(keywords)) {
    PyErr_SetString(PyExc_TypeError, "Calls takes no keyword arguments");
    return NULL;
  }
  if (!PyArg_ParseTuple(positional, "OOnp", &captureNames, &params,
                        &maxLaunches, &returnLse))
    return NULL;
  if (!PyTuple_Check(captureNames) || !PyDict_Check(params) ||
      maxLaunches < 1) {
    PyErr_SetString(PyExc_ValueError, "Calls(capture_names: tuple, params: "
                                      "dict, max_launches >= 1)");
    return NULL;
  }
  Calls *self =
      (Calls *)((allocfunc)PyType_GetSlot(type, Py_tp_alloc))(type, 0);
  if (!self)
    return NULL;
  Py_INCREF(captureNames);
  self->captureNames = captureNames;
  self->maxLaunches = maxLaunches;
  self->returnLse = returnLse;
  self->numParams = PyDict_Size(params);
  self->launches = PyDict_New();
  self->paramSlots = PyDict_New();
  self->intParam = PyMem_Calloc(self->numParams + 1, 1);
  self->requiredParam = PyMem_Calloc(self->numParams + 1, 1);
  if (!self->launches || !self->paramSlots || !self->intParam ||
      !self->requiredParam) {
    Py_DECREF(self);
    return PyErr_Occurred() ? NULL : PyErr_NoMemory();
  }
  Py_ssize_t position = 0;
  PyObject *name, *entry;
  while (PyDict_Next(params, &position, &name, &entry)) {
    Py_ssize_t slot;
    int isInt, hasDefault;
    if (!PyArg_ParseTuple(entry, "npp", &slot, &isInt, &hasDefault) ||
        slot < 0 || slot >= self->numParams) {
      if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError,
                        "params: a slot outside the declared params");
      Py_DECREF(self);
      return NULL;
    }
    PyObject *slotValue = PyLong_FromSsize_t(slot);
    int stored =
        slotValue ? PyDict_SetItem(self->paramSlots, name, slotValue) : -1;
    Py_XDECREF(slotValue);
    if (stored < 0) {
      Py_DECREF(self);
      return NULL;
    }
    self->intParam[slot] = (unsigned char)isInt;
    self->requiredParam[slot] = (unsigned char)!hasDefault;
  }
  return (PyObject *)self;
}

/* Appends shape, stride(), dtype and device of `tensor` to `list`. */
static int appendTensorSignature(PyObject *list, PyObject *tensor) {
  PyObject *items[4] = {PyObject_GetAttr(tensor, shapeName),
                        PyObject_CallMethodObjArgs(tensor, strideName, NULL),
                        PyObject_GetAttr(tensor, dtypeName),
                        PyObject_GetAttr(tensor, deviceName)};
  int status = 0;
  for (int i = 0; i < 4; ++i) {
    if (!items[i] || (status == 0 && PyList_Append(list, items[i]) < 0))
      status = -1;
    Py_XDECREF(items[i]);
  }
  return status;
}

/* What a call's checks read (layout, return_lse, and the shape, strides,
 * dtype and device of every tensor; a capture's requires_grad) as a tuple;
 * Py_None (a new reference) for arguments the fast path does not take:
 * tensor subclasses, captures that are not a dict of exactly the spec's. */
static PyObject *signatureOf(Calls *self, PyObject *q, PyObject *k, PyObject *v,
                             PyObject *captures, PyObject *layout,
                             PyObject *returnLse) {
  if (!isExactTensor(q) || !isExactTensor(k) || !isExactTensor(v))
    Py_RETURN_NONE;
  Py_ssize_t numCaptures = PyTuple_Size(self->captureNames);
  if (numCaptures == 0) {
    int given = PyObject_IsTrue(captures);
    if (given < 0)
      return NULL;
    if (given)
      Py_RETURN_NONE;
  } else if (!PyDict_CheckExact(captures) ||
             PyDict_Size(captures) != numCaptures) {
    Py_RETURN_NONE;
  }
  int lse = PyObject_IsTrue(returnLse);
  if (lse < 0)
    return NULL;
  PyObject *list = PyList_New(0);
  if (!list)
    return NULL;
  if (PyList_Append(list, layout) < 0 ||
      PyList_Append(list, lse ? Py_True : Py_False) < 0 ||
      appendTensorSignature(list, q) < 0 ||
      appendTensorSignature(list, k) < 0 || appendTensorSignature(list, v) < 0)
    goto fail;
  for (Py_ssize_t i = 0; i < numCaptures; ++i) {
    PyObject *capture =
        PyDict_GetItem(captures, PyTuple_GetItem(self->captureNames, i));
    if (!capture || !isExactTensor(capture)) {
      Py_DECREF(list);
      Py_RETURN_NONE;
    }
    int requiresGrad = attributeTruth(capture, requiresGradName);
    if (requiresGrad < 0 || appendTensorSignature(list, capture) < 0 ||
        PyList_Append(list, requiresGrad ? Py_True : Py_False) < 0)
      goto fail;
  }
  PyObject *signature = PyList_AsTuple(list);
  Py_DECREF(list);
  return signature;
fail:
  Py_DECREF(list);
  return NULL;
}

/* signature(q, k, v, captures, layout, return_lse): the tuple add() and
 * call() key launches by, or None. */
static PyObject *Calls_signature(Calls *self, PyObject *positional) {
  PyObject *q, *k, *v, *captures, *layout, *returnLse;
  if (!PyArg_ParseTuple(positional, "OOOOOO", &q, &k, &v, &captures, &layout,
                        &returnLse))
    return NULL;
  return signatureOf(self, q, k, v, captures, layout, returnLse);
}

/* add(signature, launch): a checked call's launch, for the calls that
 * repeat its signature. */
static PyObject *Calls_add(Calls *self, PyObject *positional) {
  PyObject *signature, *launch;
  if (!PyArg_ParseTuple(positional, "O!O!", &PyTuple_Type, &signature,
                        (PyTypeObject *)launchType, &launch))
    return NULL;
  if (PyDict_Size(self->launches) >= self->maxLaunches)
    PyDict_Clear(self->launches);
  if (PyDict_SetItem(self->launches, signature, launch) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* Calls with more params take the checked path. */
enum { MaxFastParams = 64 };

/* The values of every param from a call's `params` (a dict of numbers by
 * name) over `defaults`: 1, or 0 if the fast path does not take them (the
 * checked path then says what is wrong). */
static int readParams(Calls *self, PyObject *params, const double *defaults,
                      double *values) {
  unsigned char seen[MaxFastParams] = {0};
  if (!PyDict_CheckExact(params) || self->numParams > MaxFastParams)
    return 0;
  memcpy(values, defaults, self->numParams * sizeof(double));
  Py_ssize_t position = 0;
  PyObject *name, *value;
  while (PyDict_Next(params, &position, &name, &value)) {
    PyObject *slotValue = PyDict_GetItem(self->paramSlots, name);
    if (!slotValue)
      return 0;
    Py_ssize_t slot = PyLong_AsSsize_t(slotValue);
    double number;
    if (PyFloat_CheckExact(value)) {
      number = PyFloat_AsDouble(value);
    } else if (PyLong_CheckExact(value)) {
      number = PyLong_AsDouble(value);
      if (number == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
      }
    } else {
      return 0; /* a tensor, a bool, another number type */
    }
    if (self->intParam[slot] && (!isfinite(number) || number != floor(number)))
      return 0;
    values[slot] = number;
    seen[slot] = 1;
  }
  for (Py_ssize_t slot = 0; slot < self->numParams; ++slot)
    if (self->requiredParam[slot] && !seen[slot])
      return 0;
  return 1;
}

/* The arguments of a call, as Attention.forward names them. */
enum {
  ArgQ,
  ArgK,
  ArgV,
  ArgParams,
  ArgCaptures,
  ArgReturnLse,
  ArgLayout,
  NumArgs
};
static PyObject *argumentNames[NumArgs];
static PyObject *defaultLayout; /* "bhnd" */

/* Binds a call's positional and keyword arguments; 0 for a call the fast
 * path does not take (a sequence block, or one Python would refuse: the
 * checked path then raises what Python raises). */
static int bindArguments(PyObject *positional, PyObject *keywords,
                         PyObject **values) {
  Py_ssize_t count = PyTuple_Size(positional);
  if (count < ArgParams || count > NumArgs)
    return 0;
  for (Py_ssize_t i = 0; i < NumArgs; ++i)
    values[i] = i < count ? PyTuple_GetItem(positional, i) : NULL;
  Py_ssize_t position = 0;
  PyObject *name, *value;
  while (PyDict_Next(keywords, &position, &name, &value)) {
    Py_ssize_t i = 0;
    while (i < NumArgs && PyUnicode_Compare(name, argumentNames[i]) != 0)
      ++i;
    if (i == NumArgs || values[i])
      return 0;
    values[i] = value;
  }
  for (Py_ssize_t i = ArgQ; i <= ArgV; ++i)
    if (!values[i])
      return 0;
  for (Py_ssize_t i = ArgParams; i < NumArgs; ++i)
    if (!values[i])
      values[i] = i == ArgLayout ? defaultLayout : Py_None;
  return 1;
}

/* nn.Module's hook dicts: the module's own, then torch.nn.modules.module's
 * global ones. */
enum { NumHookDicts = 4 };
static PyObject *hookNames[NumHookDicts], *globalHookNames[NumHookDicts];

/* Whether calling `module` would run a hook (its own or a global one);
 * -1 with an exception set. */
static int hooksWouldRun(PyObject *module) {
  for (size_t i = 0; i < 2 * NumHookDicts; ++i) {
    PyObject *hooks = i < NumHookDicts
                          ? PyObject_GetAttr(module, hookNames[i])
                          : PyObject_GetAttr(moduleGlobals,
                                             globalHookNames[i - NumHookDicts]);
    int any = hooks ? PyObject_IsTrue(hooks) : -1;
    Py_XDECREF(hooks);
    if (any)
      return any;
  }
  return 0;
}

/* call(args, kwargs, module): a call of the module whose signature a
 * checked call had and that no hook would see, run here: o, or (o, lse) as
 * return_lse asks; None when the checked path must take it. */
static PyObject *Calls_call(Calls *self, PyObject *positional) {
  PyObject *callArgs, *callKeywords, *module;
  if (!PyArg_ParseTuple(positional, "O!O!O", &PyTuple_Type, &callArgs,
                        &PyDict_Type, &callKeywords, &module))
    return NULL;
  /* No launch exists before configure(). */
  if (!forwardFunction)
    Py_RETURN_NONE;
  PyObject *arguments[NumArgs];
  if (!bindArguments(callArgs, callKeywords, arguments))
    Py_RETURN_NONE;
  PyObject *q = arguments[ArgQ], *k = arguments[ArgK], *v = arguments[ArgV],
           *params = arguments[ArgParams], *captures = arguments[ArgCaptures],
           *layout = arguments[ArgLayout];
  int returnLse = arguments[ArgReturnLse] == Py_None
                      ? self->returnLse
                      : PyObject_IsTrue(arguments[ArgReturnLse]);
  if (returnLse < 0)
    return NULL;
  int hooks = hooksWouldRun(module);
  if (hooks)
    return hooks < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
  PyObject *mode = PyObject_CallObject(currentDispatchMode, NULL);
  if (!mode)
    return NULL;
  Py_DECREF(mode);
  if (mode != Py_None)
    Py_RETURN_NONE;
  PyObject *signature = signatureOf(self, q, k, v, captures, layout,
                                    returnLse ? Py_True : Py_False);
  if (!signature || signature == Py_None)
    return signature;
  PyObject *launchObject = PyDict_GetItem(self->launches, signature);
  Py_DECREF(signature);
  if (!launchObject)
    Py_RETURN_NONE;
  Launch *launch = (Launch *)launchObject;
  Py_INCREF(launch);
  PyObject *result = NULL;
  int gradEnabled = callTruth(isGradEnabled);
  if (gradEnabled < 0)
    goto done;
  if (gradEnabled) {
    int requiresGrad = launch->capturesRequireGrad;
    PyObject *tensors[3] = {q, k, v};
    for (int i = 0; i < 3 && requiresGrad == 0; ++i)
      requiresGrad = attributeTruth(tensors[i], requiresGradName);
    if (requiresGrad) {
      if (requiresGrad > 0)
        result = (Py_INCREF(Py_None), Py_None);
      goto done;
    }
  }
  double values[MaxFastParams];
  const double *paramValues = NULL;
  if (params != Py_None) {
    if (!readParams(self, params, launch->defaults, values)) {
      result = (Py_INCREF(Py_None), Py_None);
      goto done;
    }
    paramValues = values;
  }
  long long device = 0;
  if (launch->cuda) {
    device = callMethodLong(q, getDeviceName);
    long long current = device < 0 ? -1 : callLong(currentDevice);
    if (PyErr_Occurred())
      goto done;
    /* Another device: the module makes q's current. */
    if (device != current) {
      result = (Py_INCREF(Py_None), Py_None);
      goto done;
    }
  }
  PyObject *captureList;
  Py_ssize_t numCaptures = PyTuple_Size(self->captureNames);
  if (!(captureList = PyList_New(numCaptures)))
    goto done;
  for (Py_ssize_t i = 0; i < numCaptures; ++i) {
    PyObject *capture =
        PyDict_GetItem(captures, PyTuple_GetItem(self->captureNames, i));
    Py_INCREF(capture);
    PyList_SetItem(captureList, i, capture);
  }
  PyObject *outputs =
      runLaunch(launch, q, k, v, captureList, paramValues, Py_None, device);
  Py_DECREF(captureList);
  if (outputs && !returnLse) {
    result = PyTuple_GetItem(outputs, 0);
    Py_INCREF(result);
    Py_DECREF(outputs);
  } else {
    result = outputs;
  }
done:
  Py_DECREF(launch);
  return result;
}

static PyMethodDef callsMethods[] = {
    {"call", (PyCFunction)Calls_call, METH_VARARGS,
     "call(args, kwargs, module) -> o or (o, lse), or None for the checked "
     "path"},
    {"signature", (PyCFunction)Calls_signature, METH_VARARGS,
     "signature(q, k, v, captures, layout, return_lse) -> tuple or None"},
    {"add", (PyCFunction)Calls_add, METH_VARARGS,
     "add(signature, launch): keep a checked call's launch"},
    {NULL, NULL, 0, NULL}};

static PyType_Slot callsSlots[] = {
    {Py_tp_new, Calls_new},
    {Py_tp_dealloc, Calls_dealloc},
    {Py_tp_methods, callsMethods},
    {Py_tp_doc, "An Attention module's checked calls (see the module's "
                "documentation)."},
    {0, NULL}};

static PyType_Spec callsSpec = {"rbfc._launcher.Calls", sizeof(Calls), 0,
                                Py_TPFLAGS_DEFAULT, callsSlots};

/* ------------------------------------------------------------------ */
/* The module                                                           */

/* configure(forward, last_error, error_type, torch_functions): librbfc's
 * rbfc_forward and rbfc_last_error as addresses, rbfc.RbfcError, and a dict
 * of the torch objects a call uses (keys as below). Called once, by
 * rbfc._ops, before any Launch runs. */
static PyObject *configure(PyObject *module, PyObject *positional) {
  (void)module;
  PyObject *forward, *lastError, *error, *torch;
  if (!PyArg_ParseTuple(positional, "OOOO!", &forward, &lastError, &error,
                        &PyDict_Type, &torch))
    return NULL;
  struct {
    const char *key;
    PyObject **slot;
  } functions[] = {{"Tensor", &tensorType},
                   {"current_dispatch_mode", &currentDispatchMode},
                   {"is_grad_enabled", &isGradEnabled},
                   {"current_device", &currentDevice},
                   {"current_raw_stream", &currentRawStream},
                   {"is_stream_capturing", &isStreamCapturing},
                   {"empty_like", &emptyLike},
                   {"get_num_threads", &getNumThreads},
                   {"module_globals", &moduleGlobals}};
  enum { NumFunctions = sizeof functions / sizeof *functions };
  PyObject *values[NumFunctions];
  for (size_t i = 0; i < NumFunctions; ++i)
    if (!(values[i] = PyDict_GetItemString(torch, functions[i].key))) {
      PyErr_Format(PyExc_KeyError, "configure: no %s", functions[i].key);
      return NULL;
    }
  PyObject *contiguousFormat = PyDict_GetItemString(torch, "contiguous_format");
  PyObject *float32Type = PyDict_GetItemString(torch, "float32");
  if (!contiguousFormat || !float32Type) {
    PyErr_SetString(PyExc_KeyError,
                    "configure: no contiguous_format or float32");
    return NULL;
  }
  void *forwardAddress = PyLong_AsVoidPtr(forward);
  void *lastErrorAddress = PyLong_AsVoidPtr(lastError);
  if (PyErr_Occurred())
    return NULL;
  if (!forwardAddress || !lastErrorAddress) {
    PyErr_SetString(PyExc_ValueError, "configure: a null function address");
    return NULL;
  }
  PyObject *contiguous = PyDict_New(), *float32 = PyDict_New();
  if (!contiguous || !float32 ||
      PyDict_SetItemString(contiguous, "memory_format", contiguousFormat) < 0 ||
      PyDict_SetItemString(float32, "dtype", float32Type) < 0) {
    Py_XDECREF(contiguous);
    Py_XDECREF(float32);
    return NULL;
  }
  for (size_t i = 0; i < NumFunctions; ++i) {
    Py_INCREF(values[i]);
    replace(functions[i].slot, values[i]);
  }
  replace(&contiguousKeywords, contiguous);
  replace(&float32Keywords, float32);
  Py_INCREF(error);
  replace(&errorType, error);
  forwardFunction = (ForwardFunction)forwardAddress;
  lastErrorFunction = (LastErrorFunction)lastErrorAddress;
  Py_RETURN_NONE;
}

static PyMethodDef moduleMethods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(forward, last_error, error_type, torch_objects)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef launcherModule = {
    PyModuleDef_HEAD_INIT,
    "rbfc._launcher",
    "The forward call's launch path in C (see launcher.c).",
    -1,
    moduleMethods,
    NULL,
    NULL,
    NULL,
    NULL};

PyMODINIT_FUNC PyInit__launcher(void) {
  PyObject *module = PyModule_Create(&launcherModule);
  if (!module)
    return NULL;
  struct {
    PyObject **name;
    const char *text;
  } names[] = {
      {&shapeName, "shape"},          {&strideName, "stride"},
      {&dtypeName, "dtype"},          {&deviceName, "device"},
      {&dataPtrName, "data_ptr"},     {&requiresGradName, "requires_grad"},
      {&getDeviceName, "get_device"}, {&newEmptyName, "new_empty"}};
  for (size_t i = 0; i < sizeof names / sizeof *names; ++i)
    if (!*names[i].name &&
        !(*names[i].name = PyUnicode_InternFromString(names[i].text)))
      goto fail;
  static const char *arguments[NumArgs] = {
      "q", "k", "v", "params", "captures", "return_lse", "layout"};
  for (size_t i = 0; i < NumArgs; ++i)
    if (!argumentNames[i] &&
        !(argumentNames[i] = PyUnicode_InternFromString(arguments[i])))
      goto fail;
  if (!defaultLayout && !(defaultLayout = PyUnicode_InternFromString("bhnd")))
    goto fail;
  static const char *hooks[NumHookDicts] = {
      "_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
      "_backward_pre_hooks"};
  for (size_t i = 0; i < NumHookDicts; ++i) {
    if (!hookNames[i] && !(hookNames[i] = PyUnicode_InternFromString(hooks[i])))
      goto fail;
    if (!globalHookNames[i] &&
        !(globalHookNames[i] = PyUnicode_FromFormat("_global%s", hooks[i])))
      goto fail;
  }
  launchType = PyType_FromSpec(&launchSpec);
  PyObject *callsType = PyType_FromSpec(&callsSpec);
  if (!launchType || !callsType) {
    Py_XDECREF(callsType);
    goto fail;
  }
  Py_INCREF(launchType);
  if (PyModule_AddObject(module, "Launch", launchType) < 0) {
    Py_DECREF(launchType);
    Py_DECREF(callsType);
    goto fail;
  }
  if (PyModule_AddObject(module, "Calls", callsType) < 0) {
    Py_DECREF(callsType);
    goto fail;
  }
  return module;
fail:
  Py_DECREF(module);
  return NULL;
}
