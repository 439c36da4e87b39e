// Tests for src/data/dataset.{h,cc}, src/data/npz.{h,cc} and src/data/zip.{h,cc}.
// Real-data tests (MEDQ_SHARED_DATA) and tests that generate .npz files with /usr/bin/python3 +
// numpy skip when those are absent.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "data/image.h"
#include "data/npz.h"
#include "data/preprocess.h"
#include "data/zip.h"

namespace medq {
namespace {

namespace fs = std::filesystem;

const std::string kFixtures = std::string(MEDQ_SOURCE_DIR) + "/tests/data/image/";
const std::string kShared = MEDQ_SHARED_DATA;
const char* kModelPreprocess =
    R"({"color": "RGB", "resize": [128, 128], "interpolation": "bilinear", )"
    R"("scale": 0.00392156862745098, "mean": [0.485, 0.456, 0.406], )"
    R"("std": [0.229, 0.224, 0.225], "layout": "NCHW"})";

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

#define SKIP_WITHOUT(path)                                                                          \
  do {                                                                                              \
    if (!exists(path))                                                                              \
      GTEST_SKIP() << (path) << " not found (shared data expected at ../shared/data next to the "   \
                   << "project); skipping real-data test";                                          \
  } while (0)

bool have_numpy() {
  static int have = -1;
  if (have < 0) have = std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
  return have == 1;
}

// A fresh temporary directory, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "medq_dataset_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    CHECK(::mkdtemp(buf.data()) != nullptr);
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f << text;
}

void copy_fixture(const std::string& name, const std::string& dst) {
  fs::create_directories(fs::path(dst).parent_path());
  fs::copy_file(kFixtures + name, dst, fs::copy_options::overwrite_existing);
}

// Direct decode + preprocess of one file (the reference for BatchLoader).
std::vector<float> direct(const Dataset& ds, size_t i, const PreprocessConfig& cfg) {
  Result<Image> img = ds.load_image(i);
  EXPECT_TRUE(img.is_ok()) << img.status().message();
  Result<std::vector<float>> v = preprocess_image(*img, cfg);
  EXPECT_TRUE(v.is_ok()) << v.status().message();
  return v.is_ok() ? v.value() : std::vector<float>();
}

// ---------------------------------------------------------------------------------------------
// CSV / manifests
// ---------------------------------------------------------------------------------------------

TEST(Csv, QuotedFieldsAndLineNumbers) {
  std::string text =
      "\xEF\xBB\xBFpath,label,note\r\n"
      "a.png,cat,\"hello, world\"\r\n"
      "\r\n"
      "\"b,c.png\",\"dog\",\"say \"\"hi\"\"\"\n"
      "d.png,cow,\"two\nlines\"\n"
      "e.png,,\n";
  auto r = parse_csv(text, "t.csv");
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const auto& rows = r.value();
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0].fields, (std::vector<std::string>{"path", "label", "note"}));
  EXPECT_EQ(rows[1].fields, (std::vector<std::string>{"a.png", "cat", "hello, world"}));
  EXPECT_EQ(rows[1].line, 2u);
  EXPECT_EQ(rows[2].fields, (std::vector<std::string>{"b,c.png", "dog", "say \"hi\""}));
  EXPECT_EQ(rows[2].line, 4u);
  EXPECT_EQ(rows[3].fields[2], "two\nlines");
  EXPECT_EQ(rows[3].line, 5u);
  EXPECT_EQ(rows[4].fields, (std::vector<std::string>{"e.png", "", ""}));
  EXPECT_EQ(rows[4].line, 7u);

  auto bad = parse_csv("a,b\n\"open,c\n", "u.csv");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("u.csv:2"), std::string::npos) << bad.status().message();
}

// A manifest over copies of the PNG fixtures.
struct ManifestFixture {
  TempDir dir;
  std::string csv;
  ManifestFixture() {
    copy_fixture("rgb8.png", dir / "img/rgb8.png");
    copy_fixture("gray8.png", dir / "img/gray, 8.png");  // comma in the file name: quoted in the CSV
    copy_fixture("rgba8.png", dir / "img/rgba8.png");
    copy_fixture("palette4.png", dir / "img/palette4.png");
    csv = dir / "manifest.csv";
    write_text(csv,
               "path,dx,sex,split\n"
               "img/rgb8.png,mel,male,train\n"
               "\"img/gray, 8.png\",nv,female,test\n"
               "img/rgba8.png,nv,,train\n"
               "img/palette4.png,bcc,male,test\n");
  }
};

TEST(Dataset, ManifestColumnsAttrsAndSplit) {
  ManifestFixture fx;
  DatasetSpec spec;
  spec.path = fx.csv;
  spec.label_column = "dx";
  auto r = Dataset::open(spec);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const Dataset& ds = **r;
  EXPECT_EQ(ds.kind(), DatasetKind::kManifest);
  ASSERT_EQ(ds.size(), 4u);
  EXPECT_EQ(ds.sample(1).id, "img/gray, 8.png");
  EXPECT_EQ(ds.sample(1).path, fx.dir / "img/gray, 8.png");
  EXPECT_EQ(ds.sample(1).label, "nv");
  EXPECT_EQ(ds.sample(1).attrs.at("sex"), "female");
  EXPECT_EQ(ds.sample(1).attrs.at("dx"), "nv");
  EXPECT_EQ(ds.sample(1).attrs.at("split"), "test");
  EXPECT_EQ(ds.sample(2).attrs.at("sex"), "");  // empty non-key fields are allowed
  EXPECT_EQ(ds.label_values(), (std::vector<std::string>{"bcc", "mel", "nv"}));
  EXPECT_EQ(ds.columns(), (std::vector<std::string>{"label", "dx", "sex", "split"}));
  for (size_t i = 0; i < ds.size(); ++i) {
    auto img = ds.load_image(i);
    ASSERT_TRUE(img.is_ok()) << img.status().message();
    EXPECT_GT(img->width, 0);
  }

  spec.split = "test";
  auto t = Dataset::open(spec);
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  ASSERT_EQ((*t)->size(), 2u);
  EXPECT_EQ((*t)->sample(0).id, "img/gray, 8.png");
  EXPECT_EQ((*t)->sample(1).id, "img/palette4.png");

  spec.split = "valid";
  auto v = Dataset::open(spec);
  ASSERT_FALSE(v.is_ok());
  EXPECT_NE(v.status().message().find("splits present: test, train"), std::string::npos) << v.status().message();

  spec.split = "";
  spec.label_column = "diagnosis";
  auto c = Dataset::open(spec);
  ASSERT_FALSE(c.is_ok());
  EXPECT_NE(c.status().message().find("'diagnosis'"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("path, dx, sex, split"), std::string::npos) << c.status().message();
}

TEST(Dataset, ManifestBadRowsNameFileAndLine) {
  TempDir dir;
  const std::string csv = dir / "m.csv";
  write_text(csv, "path,label,split\na.png,x,train\nb.png,y\n");
  auto r = Dataset::open(DatasetSpec{csv});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(csv + ":3"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("expected 3 fields"), std::string::npos) << r.status().message();

  write_text(csv, "path,label,split\na.png,x,train\n\nb.png,,train\n");
  r = Dataset::open(DatasetSpec{csv});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(csv + ":4"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("empty 'label'"), std::string::npos) << r.status().message();

  write_text(csv, "path,label,split\na.png,x,train,extra\n");
  r = Dataset::open(DatasetSpec{csv});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(csv + ":2"), std::string::npos) << r.status().message();

  // A row whose file does not exist loads with an error naming file:line.
  write_text(csv, "path,label,split\n\"x/missing.png\",x,train\n");
  r = Dataset::open(DatasetSpec{csv});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  auto img = (*r)->load_image(0);
  ASSERT_FALSE(img.is_ok());
  EXPECT_EQ(img.status().code(), StatusCode::kNotFound);
  EXPECT_NE(img.status().message().find(csv + ":2"), std::string::npos) << img.status().message();
  EXPECT_NE(img.status().message().find("missing.png"), std::string::npos) << img.status().message();

  EXPECT_FALSE(Dataset::open(DatasetSpec{dir / "nope.csv"}).is_ok());
  write_text(dir / "data.txt", "x");
  EXPECT_FALSE(Dataset::open(DatasetSpec{dir / "data.txt"}).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Image folders
// ---------------------------------------------------------------------------------------------

TEST(Dataset, ImageFolder) {
  TempDir dir;
  copy_fixture("rgb8.png", dir / "zebra/b.png");
  copy_fixture("gray8.png", dir / "zebra/a.PNG");
  copy_fixture("synth_420.jpg", dir / "ant/x.jpg");
  write_text(dir / "ant/notes.txt", "ignored");
  write_text(dir / "readme.md", "ignored");
  fs::create_directories(dir / ".hidden");
  copy_fixture("rgb8.png", dir / ".hidden/c.png");
  auto r = Dataset::open(DatasetSpec{dir.path()});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const Dataset& ds = **r;
  EXPECT_EQ(ds.kind(), DatasetKind::kImageFolder);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.sample(0).id, "ant/x.jpg");
  EXPECT_EQ(ds.sample(0).label, "ant");
  EXPECT_EQ(ds.sample(1).id, "zebra/a.PNG");
  EXPECT_EQ(ds.sample(2).id, "zebra/b.png");
  EXPECT_EQ(ds.sample(2).label, "zebra");
  EXPECT_EQ(ds.label_values(), (std::vector<std::string>{"ant", "zebra"}));
  auto img = ds.load_image(0);
  ASSERT_TRUE(img.is_ok()) << img.status().message();
  EXPECT_EQ(img->width, 40);
  EXPECT_EQ(img->height, 30);

  auto e = Dataset::open(DatasetSpec{dir / "ant"});
  EXPECT_FALSE(e.is_ok());  // no class subfolders -> no images
  auto s = Dataset::open(DatasetSpec{dir.path(), "train"});
  EXPECT_FALSE(s.is_ok());
}

TEST(Dataset, ImageFolderWithSplitSubfolders) {
  TempDir dir;
  copy_fixture("rgb8.png", dir / "train/benign/a.png");
  copy_fixture("rgb8.png", dir / "train/malignant/b.png");
  copy_fixture("gray8.png", dir / "test/benign/c.png");
  // One split: its class folders.
  auto t = Dataset::open(DatasetSpec{dir.path(), "test"});
  ASSERT_TRUE(t.is_ok()) << t.status().message();
  ASSERT_EQ((*t)->size(), 1u);
  EXPECT_EQ((*t)->sample(0).label, "benign");
  // Every split (was: 'test' and 'train' read as two classes).
  auto all = Dataset::open(DatasetSpec{dir.path()});
  ASSERT_TRUE(all.is_ok()) << all.status().message();
  const Dataset& ds = **all;
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.label_values(), (std::vector<std::string>{"benign", "malignant"}));
  EXPECT_EQ(ds.sample(0).id, "test/benign/c.png");
  EXPECT_EQ(ds.sample(0).attrs.at("split"), "test");
  EXPECT_EQ(ds.sample(2).attrs.at("split"), "train");
  auto cols = ds.columns();
  EXPECT_NE(std::find(cols.begin(), cols.end(), "split"), cols.end());
  // A missing split names the flag for a plain class folder.
  auto v = Dataset::open(DatasetSpec{dir.path(), "val"});
  ASSERT_FALSE(v.is_ok());
  EXPECT_NE(v.status().message().find("--split all"), std::string::npos) << v.status().message();
}

// ---------------------------------------------------------------------------------------------
// npz
// ---------------------------------------------------------------------------------------------

TEST(Npz, RealMedmnist) {
  const std::string breast = kShared + "/medmnist/breastmnist.npz";
  const std::string retina = kShared + "/medmnist/retinamnist.npz";
  SKIP_WITHOUT(breast);
  {
    auto npz = NpzFile::open(breast);
    ASSERT_TRUE(npz.is_ok()) << npz.status().message();
    EXPECT_EQ(npz->keys(), (std::vector<std::string>{"train_images", "val_images", "test_images", "train_labels",
                                                     "val_labels", "test_labels"}));
    auto t = npz->load("train_images");
    ASSERT_TRUE(t.is_ok()) << t.status().message();
    EXPECT_EQ(t->shape(), (Shape{546, 28, 28}));
    EXPECT_EQ(t->dtype(), DataType::kUInt8);
    auto missing = npz->load("foo");
    ASSERT_FALSE(missing.is_ok());
    EXPECT_NE(missing.status().message().find("train_images"), std::string::npos);
  }
  auto count = [](const Dataset& ds) {
    std::map<std::string, size_t> m;
    for (size_t i = 0; i < ds.size(); ++i) m[ds.sample(i).label]++;
    return m;
  };
  auto tr = Dataset::open(DatasetSpec{breast, "train"});
  ASSERT_TRUE(tr.is_ok()) << tr.status().message();
  EXPECT_EQ((*tr)->kind(), DatasetKind::kNpz);
  EXPECT_EQ((*tr)->size(), 546u);
  EXPECT_EQ(count(**tr), (std::map<std::string, size_t>{{"0", 147}, {"1", 399}}));
  EXPECT_EQ((*tr)->sample(17).id, "npz:train[17]");
  auto img = (*tr)->load_image(17);
  ASSERT_TRUE(img.is_ok());
  EXPECT_EQ(img->width, 28);
  EXPECT_EQ(img->height, 28);
  EXPECT_EQ(img->channels, 1);

  DatasetSpec all{breast};
  all.label_names = {"malignant", "normal, benign"};
  auto a = Dataset::open(all);
  ASSERT_TRUE(a.is_ok()) << a.status().message();
  EXPECT_EQ((*a)->size(), 546u + 78u + 156u);
  EXPECT_EQ(count(**a), (std::map<std::string, size_t>{{"malignant", 147 + 21 + 42}, {"normal, benign", 399 + 57 + 114}}));
  EXPECT_EQ((*a)->label_values(), all.label_names);
  EXPECT_EQ((*a)->sample(546).id, "npz:val[0]");
  EXPECT_EQ((*a)->sample(546).attrs.at("split"), "val");

  if (exists(retina)) {
    auto te = Dataset::open(DatasetSpec{retina, "test"});
    ASSERT_TRUE(te.is_ok()) << te.status().message();
    EXPECT_EQ((*te)->size(), 400u);
    EXPECT_EQ(count(**te), (std::map<std::string, size_t>{{"0", 174}, {"1", 46}, {"2", 92}, {"3", 68}, {"4", 20}}));
    EXPECT_EQ((*te)->label_values(), (std::vector<std::string>{"0", "1", "2", "3", "4"}));
    auto im = (*te)->load_image(399);
    ASSERT_TRUE(im.is_ok());
    EXPECT_EQ(im->channels, 3);
    if (have_numpy()) {
      // Pixel sums of a few images, as numpy computes them.
      TempDir dir;
      std::string out = dir / "sums.txt";
      std::string cmd = "/usr/bin/python3 -c \"import numpy as np; d=np.load('" + retina +
                        "'); x=d['test_images']; print(int(x[0].sum()), int(x[399].sum()), int(x[5,3,7,1]))\" > " + out;
      ASSERT_EQ(std::system(cmd.c_str()), 0);
      std::ifstream f(out);
      double s0, s399, px;
      f >> s0 >> s399 >> px;
      auto sum = [](const Image& m) {
        double s = 0;
        for (size_t i = 0; i < m.size(); ++i) s += m.at(i);
        return s;
      };
      EXPECT_EQ(sum((*te)->load_image(0).value()), s0);
      EXPECT_EQ(sum(*im), s399);
      EXPECT_TRUE(im->is_u8());  // MedMNIST stores bytes
      EXPECT_EQ((*te)->load_image(5).value().at((3 * 28 + 7) * 3 + 1), px);
    }
  }
  auto bad = Dataset::open(DatasetSpec{breast, "validation"});
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("validation_images"), std::string::npos) << bad.status().message();
}

TEST(Npz, DeclaredSizeBeyondWhatDeflateCanProduceIsRefused) {
  // A 574-byte .npz declaring a 3 GiB member allocated 3.26 GB before failing: a zip whose one
  // deflate member claims 3 GiB from a few bytes is refused before any allocation.
  TempDir dir;
  const std::string data = "x";  // stored as deflate below: 3 bytes of compressed data
  std::string comp = std::string("\x4b\x00\x00", 3);
  const uint32_t usize = 3u << 30;
  auto le16 = [](std::string& s, uint16_t v) { s += char(v & 0xff); s += char(v >> 8); };
  auto le32 = [&](std::string& s, uint32_t v) { le16(s, v & 0xffff); le16(s, v >> 16); };
  const std::string name = "images.npy";
  std::string z;
  le32(z, 0x04034b50); le16(z, 20); le16(z, 0); le16(z, 8); le16(z, 0); le16(z, 0);
  le32(z, 0); le32(z, static_cast<uint32_t>(comp.size())); le32(z, usize);
  le16(z, static_cast<uint16_t>(name.size())); le16(z, 0); z += name + comp;
  const uint32_t cd = static_cast<uint32_t>(z.size());
  le32(z, 0x02014b50); le16(z, 20); le16(z, 20); le16(z, 0); le16(z, 8); le16(z, 0); le16(z, 0);
  le32(z, 0); le32(z, static_cast<uint32_t>(comp.size())); le32(z, usize);
  le16(z, static_cast<uint16_t>(name.size())); le16(z, 0); le16(z, 0); le16(z, 0); le16(z, 0); le32(z, 0); le32(z, 0);
  z += name;
  const uint32_t cd_size = static_cast<uint32_t>(z.size()) - cd;
  le32(z, 0x06054b50); le16(z, 0); le16(z, 0); le16(z, 1); le16(z, 1); le32(z, cd_size); le32(z, cd); le16(z, 0);
  write_text(dir / "bomb.npz", z);
  auto ar = ZipArchive::open(dir / "bomb.npz");
  ASSERT_TRUE(ar.is_ok()) << ar.status().message();
  ASSERT_EQ(ar.value().entries().size(), 1u);
  auto r = ar.value().read(ar.value().entries()[0]);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("more than deflate can produce"), std::string::npos) << r.status().message();
  (void)data;
}

TEST(Npz, GeneratedCompressedAndStored) {
  if (!have_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  TempDir dir;
  const std::string script = dir / "gen.py";
  write_text(script,
             "import numpy as np, sys\n"
             "d = sys.argv[1]\n"
             "g = (np.arange(5*4*3) * 7 % 256).astype(np.uint8).reshape(5, 4, 3)\n"
             "c = (np.arange(3*2*2*3) * 11 % 256).astype(np.uint8).reshape(3, 2, 2, 3)\n"
             "np.savez_compressed(d + '/comp.npz', train_images=g, train_labels=np.array([[0],[2],[1],[2],[0]], np.int64),\n"
             "                    test_images=c, test_labels=np.array([1, 0, 1], np.uint8))\n"
             "np.savez(d + '/stored.npz', images=c, labels=np.array([[3],[3],[4]], np.int32))\n"
             "np.savez(d + '/empty.npz', a=np.zeros((0,), np.float32))\n");
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + dir.path()).c_str()), 0);

  {
    auto z = ZipArchive::open(dir / "comp.npz");
    ASSERT_TRUE(z.is_ok()) << z.status().message();
    EXPECT_EQ(z->entries().size(), 4u);
    EXPECT_EQ(z->entries()[0].method, 8);
    auto s = ZipArchive::open(dir / "stored.npz");
    ASSERT_TRUE(s.is_ok());
    EXPECT_EQ(s->entries()[0].method, 0);
    auto all = load_npz(dir / "empty.npz");
    ASSERT_TRUE(all.is_ok()) << all.status().message();
    EXPECT_EQ(all->at("a").numel(), 0);
  }

  auto r = Dataset::open(DatasetSpec{dir / "comp.npz"});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const Dataset& ds = **r;
  ASSERT_EQ(ds.size(), 8u);
  EXPECT_EQ(ds.sample(1).label, "2");
  EXPECT_EQ(ds.sample(5).id, "npz:test[0]");
  EXPECT_EQ(ds.sample(5).label, "1");
  auto g = ds.load_image(2);
  ASSERT_TRUE(g.is_ok());
  EXPECT_EQ(g->channels, 1);
  EXPECT_EQ(g->width, 3);
  EXPECT_EQ(g->height, 4);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(g->at(size_t(i)), float((2 * 12 + i) * 7 % 256));
  auto c = ds.load_image(7);
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->channels, 3);
  EXPECT_EQ(c->width, 2);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(c->at(size_t(i)), float((2 * 12 + i) * 11 % 256));

  auto s = Dataset::open(DatasetSpec{dir / "stored.npz"});
  ASSERT_TRUE(s.is_ok()) << s.status().message();
  ASSERT_EQ((*s)->size(), 3u);
  EXPECT_EQ((*s)->sample(0).id, "npz:images[0]");
  EXPECT_EQ((*s)->label_values(), (std::vector<std::string>{"3", "4"}));
  DatasetSpec named{dir / "stored.npz"};
  named.label_names = {"a", "b", "c"};
  auto n = Dataset::open(named);
  ASSERT_FALSE(n.is_ok());  // label 3 has no name
  EXPECT_NE(n.status().message().find("label 3"), std::string::npos) << n.status().message();

  // Corruption: truncated and bit-flipped archives give errors, never crashes.
  std::ifstream in(dir / "comp.npz", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  write_text(dir / "trunc.npz", bytes.substr(0, bytes.size() / 2));
  EXPECT_FALSE(Dataset::open(DatasetSpec{dir / "trunc.npz"}).is_ok());
  for (size_t pos : {size_t(60), size_t(100), bytes.size() / 3, bytes.size() - 30}) {
    std::string b = bytes;
    b[pos] = static_cast<char>(b[pos] ^ 0x5a);
    write_text(dir / "flip.npz", b);
    auto f = Dataset::open(DatasetSpec{dir / "flip.npz"});
    if (f.is_ok()) {  // a flip in a place that does not matter is fine; loading must not crash
      for (size_t i = 0; i < (*f)->size(); ++i) (void)(*f)->load_image(i);
    }
  }
  write_text(dir / "garbage.npz", "PK not a zip");
  auto gb = Dataset::open(DatasetSpec{dir / "garbage.npz"});
  ASSERT_FALSE(gb.is_ok());
  EXPECT_NE(gb.status().message().find("garbage.npz"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Balanced sampling
// ---------------------------------------------------------------------------------------------

// 3 labels (a: 50, b: 10, c: 2), sex alternating male/female. Files need not exist.
std::unique_ptr<Dataset> synthetic(TempDir& dir) {
  std::string text = "path,label,sex\n";
  int k = 0;
  for (auto [label, count] : std::vector<std::pair<std::string, int>>{{"a", 50}, {"b", 10}, {"c", 2}})
    for (int i = 0; i < count; ++i, ++k) text += "f" + std::to_string(k) + ".png," + label + "," + (k % 2 ? "male" : "female") + "\n";
  write_text(dir / "syn.csv", text);
  auto r = Dataset::open(DatasetSpec{dir / "syn.csv"});
  CHECK(r.is_ok());
  return std::move(r).value();
}

TEST(BalancedSample, CoversStrataAndIsDeterministic) {
  TempDir dir;
  auto ds = synthetic(dir);
  auto counts = [&](const std::vector<size_t>& idx) {
    std::map<std::string, size_t> m;
    for (size_t i : idx) m[ds->sample(i).label]++;
    return m;
  };
  std::string table;
  SampleReport rep;
  auto r = balanced_sample(*ds, 12, {"label"}, 42, &table, &rep);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->size(), 12u);
  EXPECT_EQ(counts(*r), (std::map<std::string, size_t>{{"a", 5}, {"b", 5}, {"c", 2}}));
  EXPECT_EQ(std::set<size_t>(r->begin(), r->end()).size(), 12u);  // no duplicates
  EXPECT_EQ(rep.per_stratum, (std::map<std::string, size_t>{{"a", 5}, {"b", 5}, {"c", 2}}));
  EXPECT_EQ(rep.available.at("a"), 50u);
  EXPECT_NE(table.find("available"), std::string::npos) << table;
  EXPECT_NE(table.find("total"), std::string::npos) << table;
  auto j = rep.to_json();
  EXPECT_EQ(j["chosen"], 12);
  EXPECT_EQ(j["strata"].size(), 3u);
  // Any prefix of 3 covers every label (round-robin order).
  EXPECT_EQ(counts({(*r)[0], (*r)[1], (*r)[2]}).size(), 3u);

  auto r2 = balanced_sample(*ds, 12, {"label"}, 42, nullptr);
  ASSERT_TRUE(r2.is_ok());
  EXPECT_EQ(*r, *r2);
  auto r3 = balanced_sample(*ds, 12, {"label"}, 43, nullptr);
  ASSERT_TRUE(r3.is_ok());
  EXPECT_NE(*r, *r3);
  EXPECT_EQ(counts(*r3), counts(*r));

  // Uneven remainder: 3 strata, n = 4 -> 2/1/1 (which one gets 2 depends on the seed).
  auto r4 = balanced_sample(*ds, 4, {"label"}, 7, nullptr);
  ASSERT_TRUE(r4.is_ok());
  auto c4 = counts(*r4);
  EXPECT_EQ(c4.size(), 3u);
  // n < #strata: n different strata.
  auto r5 = balanced_sample(*ds, 2, {"label"}, 7, nullptr);
  ASSERT_TRUE(r5.is_ok());
  EXPECT_EQ(counts(*r5).size(), 2u);
  // n > size: everything, once.
  std::string t6;
  auto r6 = balanced_sample(*ds, 1000, {"label"}, 1, &t6);
  ASSERT_TRUE(r6.is_ok());
  EXPECT_EQ(r6->size(), 62u);
  EXPECT_EQ(std::set<size_t>(r6->begin(), r6->end()).size(), 62u);
  EXPECT_NE(t6.find("requested 1000"), std::string::npos) << t6;
  // Two keys: 6 strata (c has one male, one female).
  SampleReport rep7;
  auto r7 = balanced_sample(*ds, 12, {"label", "sex"}, 3, nullptr, &rep7);
  ASSERT_TRUE(r7.is_ok());
  EXPECT_EQ(rep7.per_stratum.size(), 6u);
  EXPECT_EQ(rep7.per_stratum.at("c|male"), 1u);
  EXPECT_EQ(rep7.per_stratum.at("c|female"), 1u);
  EXPECT_GE(rep7.per_stratum.at("a|female"), 2u);  // 6 + 4 + 2 of the 4 larger strata
  EXPECT_LE(rep7.per_stratum.at("a|female"), 3u);
  EXPECT_EQ(rep7.chosen, 12u);
  // No keys: a plain seeded random sample.
  auto r8 = balanced_sample(*ds, 10, {}, 3, nullptr);
  ASSERT_TRUE(r8.is_ok());
  EXPECT_EQ(std::set<size_t>(r8->begin(), r8->end()).size(), 10u);

  auto bad = balanced_sample(*ds, 10, {"label", "age"}, 1, nullptr);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("'age'"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("label, sex"), std::string::npos) << bad.status().message();
}

TEST(BalancedSample, RealSkinManifest) {
  const std::string csv = kShared + "/skin_ham10000/manifest.csv";
  SKIP_WITHOUT(csv);
  DatasetSpec spec{csv, "train", "dx"};
  auto r = Dataset::open(spec);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ((*r)->size(), 4190u);
  EXPECT_EQ((*r)->label_values().size(), 7u);
  SampleReport rep;
  auto idx = balanced_sample(**r, 140, {"label"}, 1, nullptr, &rep);
  ASSERT_TRUE(idx.is_ok());
  EXPECT_EQ(idx->size(), 140u);
  EXPECT_EQ(rep.per_stratum.size(), 7u);
  for (const auto& [k, v] : rep.per_stratum) EXPECT_EQ(v, std::min<size_t>(rep.available.at(k), 20u)) << k;
  auto by_sex = balanced_sample(**r, 60, {"sex", "age_group"}, 1, nullptr, &rep);
  ASSERT_TRUE(by_sex.is_ok());
  EXPECT_EQ(by_sex->size(), 60u);
}

// ---------------------------------------------------------------------------------------------
// BatchLoader
// ---------------------------------------------------------------------------------------------

TEST(BatchLoader, MatchesDirectPreprocessing) {
  TempDir dir;
  const char* files[] = {"rgb8.png", "gray8.png", "rgba8.png", "palette4.png", "synth_420.jpg", "gray16.png", "la8.png"};
  for (int i = 0; i < 7; ++i) copy_fixture(files[i], dir / (std::string(i % 2 ? "b/" : "a/") + std::to_string(i) + "_" + files[i]));
  auto r = Dataset::open(DatasetSpec{dir.path()});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const Dataset& ds = **r;
  ASSERT_EQ(ds.size(), 7u);
  PreprocessConfig cfg;
  cfg.resize_w = 16;
  cfg.resize_h = 12;
  cfg.mean = {0.485f, 0.456f, 0.406f};
  cfg.std = {0.229f, 0.224f, 0.225f};
  for (int threads : {1, 3}) {
    for (std::string layout : {"NCHW", "NHWC"}) {
      cfg.layout = layout;
      std::vector<size_t> order{6, 0, 5, 1, 4, 2, 3};
      BatchLoader loader(ds, order, cfg, 3, threads);
      EXPECT_EQ(loader.num_batches(), 3u);
      Batch b;
      size_t seen = 0, batches = 0;
      while (loader.next(b)) {
        ++batches;
        const size_t n = b.indices.size();
        EXPECT_EQ(n, batches < 3 ? 3u : 1u);
        EXPECT_EQ(b.x.shape(), layout == "NCHW" ? (Shape{int64_t(n), 3, 12, 16}) : (Shape{int64_t(n), 12, 16, 3}));
        for (size_t k = 0; k < n; ++k) {
          EXPECT_EQ(b.indices[k], order[seen + k]);
          std::vector<float> ref = direct(ds, b.indices[k], cfg);
          ASSERT_EQ(ref.size(), 3u * 12 * 16);
          EXPECT_EQ(0, std::memcmp(ref.data(), b.x.data<float>() + k * ref.size(), ref.size() * sizeof(float)))
              << ds.sample(b.indices[k]).id;
        }
        seen += n;
      }
      EXPECT_TRUE(loader.status().is_ok()) << loader.status().message();
      EXPECT_EQ(seen, 7u);
      EXPECT_FALSE(loader.next(b));  // stays finished
    }
  }
  // Grey output.
  cfg.layout = "NCHW";
  cfg.color = "L";
  cfg.mean = {0.5f};
  cfg.std = {0.5f};
  BatchLoader grey(ds, {0, 1}, cfg, 8);
  Batch b;
  ASSERT_TRUE(grey.next(b)) << grey.status().message();
  EXPECT_EQ(b.x.shape(), (Shape{2, 1, 12, 16}));
  std::vector<float> ref = direct(ds, 1, cfg);
  EXPECT_EQ(0, std::memcmp(ref.data(), b.x.data<float>() + ref.size(), ref.size() * sizeof(float)));
  EXPECT_FALSE(grey.next(b));
  EXPECT_TRUE(grey.status().is_ok());
}

TEST(BatchLoader, ErrorsAreStatuses) {
  TempDir dir;
  copy_fixture("rgb8.png", dir / "a/0.png");
  copy_fixture("rgb8.png", dir / "a/1.png");
  write_text(dir / "a/2_corrupt.png", "\x89PNG\r\n\x1a\n garbage that is not a png");
  copy_fixture("rgb8.png", dir / "a/3.png");
  auto r = Dataset::open(DatasetSpec{dir.path()});
  ASSERT_TRUE(r.is_ok());
  PreprocessConfig cfg;
  cfg.resize_w = cfg.resize_h = 8;
  for (int threads : {1, 2}) {
    BatchLoader loader(**r, {0, 1, 2, 3}, cfg, 2, threads);
    Batch b;
    ASSERT_TRUE(loader.next(b)) << loader.status().message();
    EXPECT_FALSE(loader.next(b));
    ASSERT_FALSE(loader.status().is_ok());
    EXPECT_NE(loader.status().message().find("2_corrupt.png"), std::string::npos) << loader.status().message();
  }
  // Bad config, bad batch size, bad index: no thread, immediate error.
  PreprocessConfig bad = cfg;
  bad.interpolation = "sinc";
  BatchLoader l1(**r, {0}, bad, 2);
  Batch b;
  EXPECT_FALSE(l1.next(b));
  EXPECT_FALSE(l1.status().is_ok());
  BatchLoader l2(**r, {0}, cfg, 0);
  EXPECT_FALSE(l2.next(b));
  EXPECT_FALSE(l2.status().is_ok());
  BatchLoader l3(**r, {0, 99}, cfg, 2);
  EXPECT_FALSE(l3.next(b));
  EXPECT_NE(l3.status().message().find("99"), std::string::npos);
  // Different sizes without resize: error naming the image.
  copy_fixture("synth_420.jpg", dir / "b/x.jpg");
  auto r2 = Dataset::open(DatasetSpec{dir.path()});
  ASSERT_TRUE(r2.is_ok());
  BatchLoader l4(**r2, {0, 4}, PreprocessConfig{}, 2);
  EXPECT_FALSE(l4.next(b));
  EXPECT_NE(l4.status().message().find("b/x.jpg"), std::string::npos) << l4.status().message();
  // Abandoning a loader early does not hang.
  {
    std::vector<size_t> many(200, 0);
    BatchLoader l5(**r, many, cfg, 4);
    ASSERT_TRUE(l5.next(b));
  }
  // Empty index list.
  BatchLoader l6(**r, {}, cfg, 4);
  EXPECT_FALSE(l6.next(b));
  EXPECT_TRUE(l6.status().is_ok());
}

TEST(BatchLoader, RealBrainMriStreaming) {
  const std::string csv = kShared + "/brain_mri/manifest.csv";
  SKIP_WITHOUT(csv);
  auto r = Dataset::open(DatasetSpec{csv, "test"});
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const Dataset& ds = **r;
  EXPECT_EQ(ds.size(), 545u);
  EXPECT_EQ(ds.label_values(), (std::vector<std::string>{"glioma", "meningioma", "notumor", "pituitary"}));
  auto cfg = parse_preprocess_json(kModelPreprocess);
  ASSERT_TRUE(cfg.is_ok());
  auto idx = balanced_sample(ds, 64, {"label"}, 5, nullptr);
  ASSERT_TRUE(idx.is_ok());
  BatchLoader loader(ds, *idx, *cfg, 16, 2);
  Progress progress("stream", idx->size(), ProgressOptions{nullptr});
  Batch b;
  size_t done = 0;
  while (loader.next(b)) {
    EXPECT_EQ(b.x.shape(), (Shape{16, 3, 128, 128}));
    if (done == 0) {
      std::vector<float> ref = direct(ds, b.indices[5], *cfg);
      EXPECT_EQ(0, std::memcmp(ref.data(), b.x.data<float>() + 5 * ref.size(), ref.size() * sizeof(float)));
    }
    done += b.indices.size();
    progress.update(done);
  }
  progress.finish();
  ASSERT_TRUE(loader.status().is_ok()) << loader.status().message();
  EXPECT_EQ(done, 64u);
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

std::string read_back(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

TEST(Progress, FormatAndThrottling) {
  EXPECT_EQ(Progress::format("calibrate", 128, 500, 128 / 41.2, false), "calibrate: 128/500 (25.6%) 41.2 img/s ETA 9s");
  EXPECT_EQ(Progress::format("eval", 0, 10, 0.0, false), "eval: 0/10 (0.0%)");
  EXPECT_EQ(Progress::format("eval", 10, 1000, 1.0, false), "eval: 10/1000 (1.0%) 10.0 img/s ETA 1m39s");
  EXPECT_EQ(Progress::format("eval", 500, 500, 12.1, true), "eval: 500/500 (100.0%) 41.3 img/s, 12.1s");

  {  // Not a TTY, default 2 s interval: fast updates print nothing until finish().
    std::FILE* f = std::tmpfile();
    Progress p("calibrate", 100, ProgressOptions{f, 0});
    for (size_t i = 1; i <= 100; ++i) p.update(i);
    p.finish();
    std::string s = read_back(f);
    EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1) << s;
    EXPECT_EQ(s.rfind("calibrate: 100/100 (100.0%)", 0), 0u) << s;
    std::fclose(f);
  }
  {  // Not a TTY, interval 0: one line per update.
    std::FILE* f = std::tmpfile();
    Progress p("x", 3, ProgressOptions{f, 0, 0.0});
    p.update(1);
    p.update(2);
    p.finish();
    std::string s = read_back(f);
    EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 3) << s;
    EXPECT_EQ(s.find('\r'), std::string::npos);
    std::fclose(f);
  }
  {  // TTY: rewrites one line with \r, newline only at the end.
    std::FILE* f = std::tmpfile();
    Progress p("x", 3, ProgressOptions{f, 1, 0.0});
    p.update(1);
    p.update(2);
    p.finish();
    std::string s = read_back(f);
    EXPECT_EQ(std::count(s.begin(), s.end(), '\r'), 3) << s;
    EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1) << s;
    std::fclose(f);
  }
}

}  // namespace
}  // namespace medq
