//===- DiskCache.cpp - compiled kernels kept across processes ------------===//
//
// An entry file is a header line and the two payloads:
//
//   rbfc-kernel-cache 1 <key> <descriptor bytes> <image bytes> <hash>\n
//   <descriptor><image>
//
// where <hash> is contentHash(key + descriptor + image).
//
//===----------------------------------------------------------------------===//
#include "rbfc/JIT/DiskCache.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/BLAKE3.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

using namespace rbfc::jit;

namespace {
constexpr llvm::StringLiteral kMagic = "rbfc-kernel-cache";
constexpr llvm::StringLiteral kFormatVersion = "1";

std::string entryHash(llvm::StringRef key, const KernelArtifact &artifact) {
  llvm::BLAKE3 hasher;
  hasher.update(key);
  hasher.update(artifact.descriptor);
  hasher.update(artifact.image);
  return llvm::toHex(hasher.final(), /*LowerCase=*/true);
}
} // namespace

std::string rbfc::jit::contentHash(llvm::StringRef text) {
  return llvm::toHex(llvm::BLAKE3::hash(llvm::arrayRefFromStringRef(text)),
                     /*LowerCase=*/true);
}

std::string DiskCache::entryPath(llvm::StringRef key) const {
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, key + ".kernel");
  return path.str().str();
}

DiskCache::Lookup DiskCache::load(llvm::StringRef key,
                                  KernelArtifact &artifact) const {
  std::string path = entryPath(key);
  if (!llvm::sys::fs::exists(path))
    return Lookup::Miss;
  auto file = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                          /*RequiresNullTerminator=*/false);
  if (!file)
    return Lookup::Rejected;
  llvm::StringRef contents = (*file)->getBuffer();
  auto [header, payload] = contents.split('\n');
  llvm::SmallVector<llvm::StringRef, 6> fields;
  header.split(fields, ' ');
  size_t descriptorBytes = 0, imageBytes = 0;
  if (fields.size() != 6 || fields[0] != kMagic ||
      fields[1] != kFormatVersion || fields[2] != key ||
      fields[3].getAsInteger(10, descriptorBytes) ||
      fields[4].getAsInteger(10, imageBytes) ||
      header.size() == contents.size() ||
      payload.size() != descriptorBytes + imageBytes)
    return Lookup::Rejected;
  KernelArtifact read{payload.take_front(descriptorBytes).str(),
                      payload.drop_front(descriptorBytes).str()};
  if (fields[5] != entryHash(key, read))
    return Lookup::Rejected;
  artifact = std::move(read);
  return Lookup::Hit;
}

bool DiskCache::store(llvm::StringRef key,
                      const KernelArtifact &artifact) const {
  // Other users must not plant kernels that this one would run.
  if (llvm::sys::fs::create_directories(directory, /*IgnoreExisting=*/true,
                                        llvm::sys::fs::perms::owner_all))
    return false;
  std::string path = entryPath(key);
  int fd;
  llvm::SmallString<256> temporary;
  if (llvm::sys::fs::createUniqueFile(path + ".tmp-%%%%%%%%", fd, temporary))
    return false;
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/true);
    os << kMagic << ' ' << kFormatVersion << ' ' << key << ' '
       << artifact.descriptor.size() << ' ' << artifact.image.size() << ' '
       << entryHash(key, artifact) << '\n'
       << artifact.descriptor << artifact.image;
    os.close();
    if (!os.has_error() &&
        !llvm::sys::fs::rename(temporary, path))
      return true;
    os.clear_error();
  }
  llvm::sys::fs::remove(temporary);
  return false;
}
